"""Shadow check: would the live model still give the answers the store serves?

A hybrid server answers what its store holds from the store; those predictions were made by a model
version at some time, and nothing says the live model still agrees. `ShadowCheck` (an observer of the
tap: on the monitor's thread, never in a request) takes a share (`ShadowSettings.share`) of the static
answers whose example came with its features, scores those features with the live model, and compares:

- **disagreement**: the share of compared answers the model would now answer differently: another
  ``label`` for a classifier; for a model without labels, a numeric output off by more than
  `ShadowSettings.rtol` relative to the stored value;
- **shift**: the mean absolute difference of the numeric outputs (probabilities, scores) over the
  compared answers.

Measured per window of `ShadowSettings.min_rows` compared answers (or the drift window's seconds, with
at least 10 answers); the ``shadow`` alert fires while the disagreement passes
`ShadowSettings.max_disagreement` and resolves when a window is back under it. A stored answer whose
columns are not the model's outputs is not compared (the router does not serve those either).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from augury.keys import key_text
from augury.monitor.alerts import AlertBook
from augury.monitor.tap import Observation, yield_gil

#: the live model's answers to rows of features (one mapping, or None where it refused, per row)
Score = Callable[[list[Sequence[Any]]], list[Mapping[str, Any] | None]]
#: rows scored in one call of the model
SCORE_BATCH = 256


@dataclass(frozen=True)
class ShadowSettings:
    """The ``[shadow]`` table of the monitor's settings file."""

    share: float = 0.05
    max_disagreement: float = 0.05
    min_rows: int = 200
    seconds: float = 60.0
    rtol: float = 1e-6


@dataclass(frozen=True)
class ShadowResult:
    rows: int
    disagreement: float
    shift: float


class ShadowCheck(Collector):
    """Compare a share of static answers with the live model's (see the module docstring)."""

    def __init__(self, score: Score, outputs: Sequence[str], settings: ShadowSettings,
                 alerts: AlertBook) -> None:
        self.score = score
        self.outputs = frozenset(outputs)
        self.settings = settings
        self.alerts = alerts
        self._credit = 0.0
        self._compared = 0
        self._differ = 0
        self._shift = 0.0
        self._shifted = 0  # numeric values compared
        self._opened = time.monotonic()
        self._last: ShadowResult | None = None
        self._total = 0
        self._lock = threading.Lock()

    def observe(self, observations: Sequence[Observation]) -> None:
        rows: list[Sequence[Any]] = []
        stored: list[Mapping[str, Any]] = []
        share = self.settings.share
        for obs in observations:
            for example, answer in zip(obs.examples, obs.answers, strict=False):
                if answer is None or example.row is None or answer.provenance.get("source") != "static":
                    continue
                self._credit += share
                if self._credit < 1.0:
                    continue
                self._credit -= 1.0
                if answer.values.keys() == self.outputs:
                    rows.append(example.row)
                    stored.append(answer.values)
        for start in range(0, len(rows), SCORE_BATCH):
            live = self.score(list(rows[start:start + SCORE_BATCH]))
            for was, now in zip(stored[start:start + SCORE_BATCH], live, strict=True):
                if now is not None:
                    self._compare(was, now)
            yield_gil()
        s = self.settings
        elapsed = time.monotonic() - self._opened
        if self._compared >= s.min_rows or (elapsed >= s.seconds and self._compared >= 10):
            self.close_window()
        elif elapsed >= s.seconds:
            self._opened = time.monotonic()  # too few to say anything: start again

    def _compare(self, was: Mapping[str, Any], now: Mapping[str, Any]) -> None:
        self._compared += 1
        differs = False
        for name in self.outputs:
            a, b = was.get(name), now.get(name)
            if name == "label":
                differs |= key_text([a]) != key_text([b])
            elif isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
                gap = abs(float(a) - float(b))
                self._shift += gap
                self._shifted += 1
                if "label" not in self.outputs and gap > self.settings.rtol * max(abs(float(a)), 1e-12):
                    differs = True
        self._differ += differs

    def close_window(self) -> ShadowResult | None:
        """Measure the current window (if any answer was compared), update the alert, open the next."""
        result = None
        if self._compared:
            result = ShadowResult(self._compared, self._differ / self._compared,
                                  self._shift / self._shifted if self._shifted else 0.0)
            limit = self.settings.max_disagreement
            firing = result.disagreement > limit
            message = (f"the live model would answer {result.disagreement:.1%} of the static answers "
                       f"checked differently (> {limit:.1%}; {result.rows} checked, mean shift "
                       f"{result.shift:.3g}): the store's predictions no longer match the model; publish "
                       f"a new batch run" if firing else
                       f"the live model agrees with the static answers checked ({result.disagreement:.1%} "
                       f"differ, <= {limit:.1%})")
            self.alerts.update("shadow", {}, firing, result.disagreement, limit, message)
            with self._lock:
                self._last = result
                self._total += result.rows
        self._compared = self._differ = self._shifted = 0
        self._shift = 0.0
        self._opened = time.monotonic()
        return result

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            last, total = self._last, self._total
        rate = GaugeMetricFamily("augury_shadow_disagreement", "Share of the static answers checked in the "
                                 "last window that the live model would answer differently (another label; "
                                 "without labels, another value).")
        shift = GaugeMetricFamily("augury_shadow_shift", "Mean absolute difference of the numeric outputs "
                                  "(probabilities, scores) between the static answers checked in the last "
                                  "window and the live model's.")
        if last is not None:
            rate.add_metric([], last.disagreement)
            shift.add_metric([], last.shift)
        compared = CounterMetricFamily("augury_shadow_checked", "Static answers scored again by the live "
                                       "model and compared.")
        compared.add_metric([], float(total))
        yield from (rate, shift, compared)
