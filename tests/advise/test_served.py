"""The pauses of a real server of the model advised on, and why they are not measured when they are not."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console

from augury.advise import advise
from augury.advise.load import Phase
from augury.advise.overheads import BUILT_IN, ServingOverheads
from augury.advise.served import FALLBACK, MIN_SERVED_S, model_pauses, own_work, why_not
from augury.advise.stalls import Pauses
from augury.models import load_model

#: calibration figures with pauses no server of a real model shows, so that their replacement shows.
CALIBRATED = replace(BUILT_IN, calibrated=True, source="calibrated for a test",
                     pauses_inline=Pauses(0.3, (0.01,)), pauses_hop=Pauses(0.3, (0.01,)))


def rows(n: int = 50) -> pa.RecordBatch:
    x = np.random.default_rng(1).normal(size=(n, 4))
    return pa.record_batch({f"f{i}": x[:, i] for i in range(4)})


def test_a_server_of_the_model_gives_its_pauses(lr_model: Path) -> None:
    """A real `augury serve` of the model, loaded in two timed open-loop phases, as calibration's, and
    with full batches for the server's own work per request."""
    model = load_model(lr_model)
    got = model_pauses(str(lr_model), rows(), model.info.inputs, 1e-4, 2e-4, CALIBRATED,
                       time.monotonic() + MIN_SERVED_S, lambda b: 5e-5 + 1e-6 * b)
    details = dict(got.model_server)
    assert details["full_rows_per_call"] >= 4 and details["full_cpu_per_request_us"] > 0
    assert details["timed_by_the_kernel"] == 1.0
    assert details["heavy_rate"] > 1.2 * details["light_rate"] > 0  # two rates: the slope is per request
    assert 0 <= details["pauses_per_request"] < 0.3
    if "load changed" in got.pauses_used:  # the stall probes before and after disagreed: not used
        assert got.pauses_used.startswith(FALLBACK) and got.pauses_inline == CALIBRATED.pauses_inline
    else:  # the calibration server's pauses are replaced, for both paths (the model takes one)
        assert got.pauses_used.startswith("measured on a server of this model"), got.pauses_used
        assert got.pauses_inline == got.pauses_hop and got.pauses_inline != CALIBRATED.pauses_inline
        assert got.pauses_inline.per_request == details["pauses_per_request"]
    doc = got.to_dict()
    assert doc["pauses_used"] == got.pauses_used and doc["model_server"]["heavy_rate"] > 0
    assert got.stalls == CALIBRATED.stalls
    if "load changed" in got.pauses_used:
        assert got.per_request_s == CALIBRATED.per_request_s and not got.work_used
    else:  # the server's own work per request, measured with full batches, beside the model's call
        rows_per_call = details["full_rows_per_call"]
        call = 5e-5 + 1e-6 * round(rows_per_call)
        cpu = details["full_cpu_per_request_us"] / 1e6
        want = cpu - (call + CALIBRATED.per_batch_inline_s) / rows_per_call
        assert abs(got.per_request_s - max(want, 0.0)) < 1e-6
        assert "on a server of this model" in got.work_used and doc["per_request_from"] == got.work_used


def test_the_servers_own_work_is_its_cpu_beyond_the_models_call_with_full_batches() -> None:
    """issue 15 (review, 2026-12-05): near capacity the advisor said one core holds an XGBoost model's
    p99 up to 27,030 req/s, where the real server's p99 was 24 ms at 13,825 and 503 ms at 22,120: its
    own work per request beyond the model was the tiny calibration model's server's."""
    full = Phase(requests=10_000, cpu_s=1.0, model_s=0.5, calls=250, wall_s=1.0)  # 100 us a request

    def call(b: int) -> float:  # 40 rows a call: 1.4 ms, 35 us a request
        return 1e-3 + 1e-5 * b

    assert own_work(full, call, BUILT_IN) == pytest.approx(1e-4 - (1.4e-3 + 200e-6) / 40)
    assert own_work(replace(full, requests=100), call, BUILT_IN) is None  # too few to tell
    assert own_work(replace(full, calls=5_000), call, BUILT_IN) is None  # 2 rows a call: wake-ups
    assert own_work(replace(full, cpu_s=0.1), call, BUILT_IN) == 0.0  # never below nothing

    # the per-batch work of the path the server takes at those rows (the model thread past 0.5 ms), as
    # the simulation counts it, not the one-row call's (inline)
    def fast(b: int) -> float:  # 0.2 ms at one row, 0.6 ms at 40
        return 1.9e-4 + 1.025e-5 * b

    paths = replace(BUILT_IN, per_batch_inline_s=0.0, per_batch_hop_s=3e-4)
    assert own_work(full, fast, paths) == pytest.approx(1e-4 - (fast(40) + 3e-4) / 40)


def test_what_is_not_measured_says_why(lr_model: Path, tmp_path: Path) -> None:
    schema = load_model(lr_model).info.inputs
    deadline = time.monotonic() + 60
    assert "Python function" in why_not("advise_models:mid", 60)
    assert "budget" in why_not(str(lr_model), MIN_SERVED_S - 1) and why_not(str(lr_model), MIN_SERVED_S) == ""
    slow = model_pauses(str(lr_model), rows(), schema, 0.01, 0.01, CALIBRATED, deadline)
    assert slow.pauses_used.startswith(FALLBACK) and "one-row call" in slow.pauses_used
    assert slow.pauses_inline == CALIBRATED.pauses_inline  # the calibration server's, kept
    # no calibration: nothing measured, and no pauses
    assert model_pauses(str(lr_model), rows(), schema, 1e-4, 2e-4, BUILT_IN, deadline) == BUILT_IN
    assert BUILT_IN.to_dict()["pauses_used"].startswith("none")
    # rows JSON cannot carry
    nan = pa.record_batch({f"f{i}": [float("nan")] for i in range(4)})
    assert "JSON" in model_pauses(str(lr_model), nan, schema, 1e-4, 2e-4, CALIBRATED, deadline).pauses_used
    # a server that cannot start: the advice goes on with the calibration server's, saying why
    broken = tmp_path / "broken.joblib"
    broken.write_bytes(b"not a model")
    failed = model_pauses(str(broken), rows(), schema, 1e-4, 2e-4, CALIBRATED, deadline)
    assert failed.pauses_used.startswith(f"{FALLBACK}: a server of this model could not be measured")
    assert "exited" in failed.pauses_used and failed.pauses_inline == CALIBRATED.pauses_inline
    assert "\n" not in failed.pauses_used  # one line, whatever the log held


def test_the_advice_says_whose_pauses_it_used(tmp_path: Path,
                                              write_ab_catalogue: Callable[..., Path]) -> None:
    data = write_ab_catalogue(tmp_path / "c.parquet", 200)
    a = advise("advise_models:mid", data, qps=50, latency_slo_ms=100, cores=2, budget_s=1.5,
               overheads=CALIBRATED)
    serving: ServingOverheads = a.measurements.serving
    assert "Python function" in serving.pauses_used
    assert a.to_dict()["serving_overheads"]["pauses_used"] == serving.pauses_used
    console = Console(record=True, width=400)
    console.print(a.render())
    text = console.export_text()
    assert "server's pauses under load" in text and "Python function" in text
