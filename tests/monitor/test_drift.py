"""Live drift measured by `DriftWatch` fed directly (no server): its false alarm rate on traffic drawn like
the reference, and how fast it sees a shift of one feature. (The same through a real server:
tests/serve/test_monitoring.py.)"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from augury.monitor.alerts import AlertBook
from augury.monitor.config import MonitorConfig, Window
from augury.monitor.drift import DriftWatch
from augury.monitor.reference import Reference
from augury.monitor.tap import Observation
from augury.serve.answers import Answer, Example
from augury.verify.profile import profile_predictions

FEATURES = ["f0", "f1", "f2", "f3"]
ROWS = 500  # rows per window
DYNAMIC = {"source": "dynamic", "model_version": "1"}


def _watch(seed: int = 0) -> tuple[DriftWatch, AlertBook]:
    x = np.random.default_rng(seed).normal(size=(3000, 4))
    reference = Reference(profile_predictions(pa.table({n: x[:, j] for j, n in enumerate(FEATURES)}),
                                              FEATURES), None, "3,000 normal rows")
    alerts = AlertBook()
    config = MonitorConfig(window=Window(requests=10**9, seconds=10**9, min_rows=200))
    return DriftWatch(reference, FEATURES, config, alerts), alerts


def _window(watch: DriftWatch, rng: np.random.Generator, shift: float = 0.0) -> dict[str, float]:
    x = rng.normal(size=(ROWS, 4))
    x[:, 0] += shift
    examples = [Example(None, row) for row in x.tolist()]
    watch.observe([Observation(examples, [Answer({}, DYNAMIC)] * ROWS, 0.0)])
    result = watch.close_window()["dynamic"]
    return {column: value for (kind, column), value in result.psi.items()}


def test_the_false_alarm_rate_on_reference_traffic_is_zero_in_800_comparisons() -> None:
    """200 windows of 500 rows drawn like the reference, 4 features each: no PSI reaches 0.2 (the largest
    measured is ~0.06; a window's PSI over 10 bins averages ~9/500 = 0.018), so no alert."""
    watch, alerts = _watch()
    rng = np.random.default_rng(1)
    values = [v for _ in range(200) for v in _window(watch, rng).values()]
    assert len(values) == 800
    assert max(values) < 0.1
    assert np.mean(values) == pytest.approx(0.018, abs=0.008)
    assert alerts.firing() == []


@pytest.mark.parametrize(("shift", "within"), [(0.5, 2), (1.0, 1)])
def test_a_shifted_feature_fires_its_alert_within_a_stated_number_of_windows(shift: float, within: int,
                                                                             ) -> None:
    """f0 moved by half a standard deviation (PSI ~0.26 on 500 rows: past 0.2 in 96% of single windows,
    measured over 50) fires its alert within 2 windows of shifted traffic, in each of 20 trials; moved by
    one (PSI ~0.95, never under 0.8) in the first. No other feature's alert fires."""
    for trial in range(20):
        watch, alerts = _watch(seed=trial)
        rng = np.random.default_rng(100 + trial)
        _window(watch, rng)
        assert alerts.firing() == []
        for _ in range(within):
            _window(watch, rng, shift)
            if alerts.firing():
                break
        assert alerts.firing() == [("drift", {"kind": "input", "source": "dynamic", "column": "f0"})]
