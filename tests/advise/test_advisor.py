"""`advise` end to end on real models and real files: the three decisions, the budget, bad inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import advise_models
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from augury.advise import advise
from augury.advise.units import duration
from augury.errors import ConfigError, InputError, ModelLoadError


def test_slow_model_small_catalogue_is_static_within_the_budget(
        tmp_path: Path, write_ab_catalogue: Callable[..., Path]) -> None:
    data = write_ab_catalogue(tmp_path / "catalogue.parquet", 300)
    ids = np.random.default_rng(2).integers(0, 300, 3000)
    pq.write_table(pa.table({"id": ids}), tmp_path / "log.parquet")
    advise_models.SLOW_CALLS.clear()
    a = advise("advise_models:slow", data, key_columns=["id"], traffic=tmp_path / "log.parquet", qps=100,
               latency_slo_ms=200, max_staleness_s=3600, cores=2, budget_s=3)
    # measuring stays in budget: the model time the advisor asked for, known by construction (50 ms a
    # row, the least each call sleeps), fits in the model's steps' share of the budget (they end at 75 %
    # of it, advisor.py), however busy the machine is (a slower call only makes the advisor start fewer
    # calls); no wall clock is read (issue 15: a bound on wall time failed at 7.3 s under load 7)
    asked = advise_models.SLOW_ROW_S * sum(advise_models.SLOW_CALLS)
    assert 0 < asked <= 0.75 * 3, advise_models.SLOW_CALLS
    assert advise_models.SLOW_CALLS.count(1) >= 3  # batch size 1 was measured, not guessed
    assert a.mode == "static"
    model = a.measurements.model
    one = model.latency[0]
    assert one.batch_size == 1 and one.measured and one.p50_s == pytest.approx(0.05, rel=0.2)
    assert model.extrapolated and any("extrapolated" in n for n in model.notes)
    assert a.measurements.traffic is not None and a.measurements.traffic.catalogue_share == 1.0
    assert a.plan.head_size == 300 and not a.dynamic.holds


def test_fast_model_with_mostly_unseen_traffic_is_dynamic(tmp_path: Path, lr_model: Path) -> None:
    rng = np.random.default_rng(3)
    catalogue = rng.normal(size=(2000, 4))
    pq.write_table(pa.table({f"f{i}": catalogue[:, i] for i in range(4)}), tmp_path / "catalogue.parquet")
    requests = rng.normal(size=(3000, 4))
    requests[:300] = catalogue[:300]  # 10 % of requests are for catalogue examples
    lines = [orjson.dumps({f"f{i}": float(r[i]) for i in range(4)}) for r in requests]
    (tmp_path / "log.jsonl").write_bytes(b"\n".join(lines))
    a = advise(str(lr_model), tmp_path / "catalogue.parquet", traffic=tmp_path / "log.jsonl", qps=200,
               latency_slo_ms=50, cores=2, budget_s=3)
    assert a.mode == "dynamic"
    t = a.measurements.traffic
    assert t is not None and t.key == "feature hash" and t.catalogue_share == pytest.approx(0.1)
    assert a.dynamic.holds and a.plan.max_batch_size is not None
    assert a.measurements.model.throughput_rows_s > 1000
    assert a.measurements.store is not None and a.measurements.store.rows_published == 2000
    assert json.loads(json.dumps(a.to_dict(), allow_nan=False))["mode"] == "dynamic"


def test_zipf_traffic_large_catalogue_mid_model_is_hybrid(
        tmp_path: Path, write_ab_catalogue: Callable[..., Path], zipf_ids: Callable[..., np.ndarray]) -> None:
    n, m = 20_000, 40_000
    data = write_ab_catalogue(tmp_path / "catalogue.parquet", n)
    rng = np.random.default_rng(4)
    ids = np.where(rng.random(m) < 0.1, 10**7 + np.arange(m), zipf_ids(n, m, 1.1))
    times = 1.77e9 + np.sort(rng.uniform(0, 3600, m))
    pacsv.write_csv(pa.table({"id": ids, "timestamp": times}), tmp_path / "log.csv")
    a = advise("advise_models:mid", data, key_columns=["id"], traffic=tmp_path / "log.csv", qps=1000,
               latency_slo_ms=100, max_staleness_s=3600, cores=2, budget_s=4)
    assert a.mode == "hybrid"
    assert a.tail is not None and a.tail.holds and not a.dynamic.holds
    assert a.plan.head_share is not None and a.plan.head_share >= 1 - a.per_core_qps * 2 / 1000
    assert a.plan.head_size is not None and a.plan.head_size < n
    assert f"{a.plan.head_size:,}" in a.summary
    t = a.measurements.traffic
    assert t is not None and t.catalogue_share == pytest.approx(0.9, abs=0.01)
    assert t.observed_qps == pytest.approx(m / 3600, rel=0.01)


def test_a_model_slower_than_the_budget_gives_a_lower_bound(
        tmp_path: Path, write_ab_catalogue: Callable[..., Path]) -> None:
    data = write_ab_catalogue(tmp_path / "catalogue.parquet", 50)
    advise_models.RELEASE_STUCK.clear()
    try:
        a = advise("advise_models:stuck", data, latency_slo_ms=100, cores=1, budget_s=0.6)
        # did not wait for the call: it returns only once released, which is after advise returned
        assert not advise_models.RELEASE_STUCK.is_set()
    finally:
        advise_models.RELEASE_STUCK.set()
    assert a.measurements.model.lower_bound and a.mode == "static"
    assert any("at least" in r for r in a.reasons)


@pytest.fixture()
def catalogue(tmp_path: Path, write_ab_catalogue: Callable[..., Path]) -> Path:
    return write_ab_catalogue(tmp_path / "catalogue.parquet", 50)


def test_empty_samples(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": pa.array([], pa.float64()), "b": pa.array([], pa.float64())}),
                   tmp_path / "empty.parquet")
    # the error names the file and what it is for (issue 15 review: "the input has no rows" for both)
    with pytest.raises(InputError, match=r"^the sample DATA: .*empty\.parquet has no rows$"):
        advise("advise_models:mid", tmp_path / "empty.parquet", budget_s=1)
    pq.write_table(pa.table({"a": [1.0], "b": [2.0]}), tmp_path / "one.parquet")
    pq.write_table(pa.table({"id": pa.array([], pa.int64())}), tmp_path / "log.parquet")
    for keys in ((), ("id",)):  # the log's columns are read first with a key, the log itself without
        with pytest.raises(InputError, match=r"^the traffic log: .*log\.parquet has no rows$"):
            advise("advise_models:mid", tmp_path / "one.parquet", key_columns=keys,
                   traffic=tmp_path / "log.parquet", budget_s=1)
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="has no row the model can score"):
        advise("advise_models:mid", tmp_path / "header.csv", budget_s=1)
    (tmp_path / "bad.csv").write_text("a,b\nx,y\n")
    with pytest.raises(InputError, match=r"no row the model can score \(first problem: .*cannot read 'x'"):
        advise("advise_models:mid", tmp_path / "bad.csv", budget_s=1)


def test_bad_logs_fail_before_measuring(tmp_path: Path, catalogue: Path) -> None:
    pq.write_table(pa.table({"user": [1, 2]}), tmp_path / "nokeys.parquet")
    advise_models.SLOW_CALLS.clear()
    with pytest.raises(InputError, match="neither the key column"):
        advise("advise_models:slow", catalogue, key_columns=["id"], traffic=tmp_path / "nokeys.parquet")
    assert advise_models.SLOW_CALLS == []  # failed before the model was called once
    pq.write_table(pa.table({"a": ["x"], "b": ["y"]}), tmp_path / "mismatch.parquet")
    with pytest.raises(InputError, match="no request that can be keyed"):
        advise("advise_models:slow", catalogue, traffic=tmp_path / "mismatch.parquet")


def test_unreadable_inputs(tmp_path: Path, catalogue: Path) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="cannot read"):
        advise("advise_models:mid", tmp_path / "junk.parquet")
    with pytest.raises(InputError, match="does not exist"):
        advise("advise_models:mid", tmp_path / "nowhere.parquet")
    with pytest.raises(InputError, match="lacks column"):
        advise("advise_models:mid", catalogue, key_columns=["sku"])
    with pytest.raises(ModelLoadError):
        advise(str(tmp_path / "model.joblib"), catalogue)


@pytest.mark.parametrize("kwargs", [{"qps": 0}, {"qps": -3.0}, {"qps": float("nan")}, {"latency_slo_ms": 0},
                                    {"max_staleness_s": -1}, {"cores": 0}, {"cores": 1.5},
                                    {"budget_s": 0}, {"catalogue_rows": 10}])
def test_bad_goals(catalogue: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        advise("advise_models:mid", catalogue, **kwargs)  # type: ignore[arg-type]


def test_a_sample_is_scaled_to_the_catalogue(tmp_path: Path, write_ab_catalogue: Callable[..., Path]) -> None:
    data = write_ab_catalogue(tmp_path / "sample.parquet", 200)
    a = advise("advise_models:mid", data, catalogue_rows=2_000_000, qps=50, latency_slo_ms=100,
               max_staleness_s=86_400, cores=2, budget_s=1.5)
    c, m = a.measurements.catalogue, a.measurements
    assert c.sampled and c.sample_rows == 200 and c.catalogue_rows == 2_000_000
    assert m.store is not None and m.store.rows_published == 200
    assert a.mode == "dynamic"  # 50 req/s of a 3 ms model: no need to precompute 2 million examples
    est = duration(m.catalogue.catalogue_rows / (m.model.throughput_rows_s * 2))
    assert any(f"(2,000,000 examples) takes about {est}" in r for r in a.reasons)


def _xgb_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An XGBoost model of 60 trees on 8 features, a 1,000-row catalogue, and a log of 4,000 requests
    half of which are for catalogue examples."""
    xgb = pytest.importorskip("xgboost")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 8))
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 5, "nthread": 1},
                        xgb.DMatrix(x, label=(x[:, 0] + x[:, 1] > 0).astype(int)), num_boost_round=60)
    booster.save_model(str(tmp_path / "model.ubj"))
    names = [f"f{i}" for i in range(8)]
    pq.write_table(pa.table({n: x[:1000, i] for i, n in enumerate(names)}), tmp_path / "catalogue.parquet")
    requests = rng.normal(size=(4000, 8))
    requests[:2000] = x[rng.integers(0, 1000, 2000)]  # half the requests are for catalogue examples
    pq.write_table(pa.table({n: requests[:, i] for i, n in enumerate(names)}), tmp_path / "log.parquet")
    return tmp_path / "model.ubj", tmp_path / "catalogue.parquet", tmp_path / "log.parquet"


def test_same_arguments_give_the_same_mode(tmp_path: Path) -> None:
    """issue 15: three runs on an XGBoost model gave hybrid, dynamic (2 / 5 ms) and dynamic (256 / 2);
    one slow call among sixty had made the one-row p99 50 times its median."""
    model, catalogue, log = _xgb_files(tmp_path)
    runs = [advise(str(model), catalogue, traffic=log, qps=300, latency_slo_ms=10, max_staleness_s=3600,
                   cores=2, budget_s=3) for _ in range(3)]
    assert [a.mode for a in runs] == [runs[0].mode] * 3


def test_same_arguments_give_the_same_advice_with_a_calibration_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibrated path, three times, with a calibration file of known figures (the server's own work,
    the core's stalls and the server's pauses, as `augury advise --calibrate` writes them): the same mode,
    and the dynamic batcher's max_batch_size within a factor of 2 of the first run's. Why 2: the sizes
    tried are powers of 2 (`capacity.GRID_SIZES`) and the one chosen is the largest whose simulated p99
    is within 5 % of the best (`capacity.best_settings`); where p99 is flat, a few per cent of noise in
    the measured model times moves that choice by one grid step, never more without a real change
    in the model's cost. The budget is 2 s a run (about 7 s in all): a server of the model is measured
    only with a budget of 20 s or more (`served.why_not`), so here the calibration file's pauses are
    used, as a user's short runs use them."""
    from augury.advise.overheads import BUILT_IN, save
    from augury.advise.stalls import Pauses, Stalls

    model, catalogue, log = _xgb_files(tmp_path)
    fixed = replace(BUILT_IN, per_batch_inline_s=60e-6, per_batch_hop_s=150e-6, per_request_s=40e-6,
                    round_trip_s=150e-6, per_wake_inline_s=30e-6, per_wake_hop_s=50e-6,
                    source="fixed for this test", calibrated=True,
                    stalls=Stalls(20.0, (0.1e-3, 0.2e-3, 0.5e-3)),
                    pauses_inline=Pauses(0.01, (0.3e-3, 0.4e-3, 1e-3)),
                    pauses_hop=Pauses(0.01, (0.3e-3, 0.4e-3, 1e-3)))
    path = save(fixed, tmp_path / "calibration.json")
    monkeypatch.setenv("AUGURY_CALIBRATION", str(path))
    runs = [advise(str(model), catalogue, traffic=log, qps=300, latency_slo_ms=10, max_staleness_s=3600,
                   cores=2, budget_s=2) for _ in range(3)]
    for a in runs:
        s = a.measurements.serving
        assert s.calibrated and s.path == str(path) and s.per_request_s == pytest.approx(40e-6)
        assert "a --budget of 20 s or more" in s.pauses_said  # the model-server step was skipped
    assert [a.mode for a in runs] == [runs[0].mode] * 3, [a.summary for a in runs]
    sizes = []
    for a in runs:
        dynamic = a.option("dynamic")
        assert dynamic is not None and dynamic.settings is not None
        sizes.append(dynamic.settings.max_batch_size)
        if a.plan.max_batch_size is not None:  # the plan's own batcher (dynamic, or a hybrid's tail)
            sizes.append(a.plan.max_batch_size)
    assert max(sizes) <= 2 * min(sizes), sizes
