"""One evaluator decision per model: a batch run and a server on the same model with the same setting
use, record and report the same evaluator, and give the same answers; every answer's provenance names it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch
from augury.errors import ConfigError
from augury.models import Model, hgb, load_model
from augury.publish import publish_predictions
from augury.serve import create_app
from augury.serve.run import open_parts
from augury.serve.settings import LaunchConfig, ServeSettings
from augury.store import SQLiteStore
from augury.verify import load_checks

from .helpers import LiveServer, add_model, live, publish_values

ROWS = 40


@contextmanager
def launched(model_ref: str | None, store_url: str | None,
             evaluator: str) -> Iterator[tuple[str, Model | None]]:
    """The app `augury serve --evaluator EVALUATOR` builds (model and store opened from the launch
    config, as its workers do), served on 127.0.0.1; yields its URL and the model it loaded."""
    config = LaunchConfig(model_ref, store_url, settings=ServeSettings(evaluator=evaluator))
    model, store = open_parts(config)
    try:
        with LiveServer(create_app(config.settings, model, store)) as server:
            yield server.url, model
    finally:
        if store is not None:
            store.close()


def _instances(features: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(features, columns=["f0", "f1", "f2", "f3"]).slice(0, ROWS).to_pylist()
    return [{k: float(v) for k, v in row.items()} for row in rows]


def _v2(instances: list[dict[str, Any]]) -> dict[str, Any]:
    data = [row[f"f{j}"] for row in instances for j in range(4)]
    return {"inputs": [{"name": "x", "shape": [len(instances), 4], "datatype": "FP64", "data": data}]}


def _published(model_ref: Path, features: Path, tmp_path: Path, options: BatchOptions) -> tuple[str, str]:
    """Batch-score `features`, publish them to a new SQLite store; (the run's evaluator, the store URL)."""
    out = tmp_path / "preds.parquet"
    result = run_batch(str(model_ref), features, out, options)
    recorded = orjson.loads(pq.read_schema(out).metadata[b"augury"])["model"]["evaluator"]
    assert recorded == result.evaluator
    store = SQLiteStore(tmp_path / "preds.db")
    try:
        version = publish_predictions(out, store, load_checks(None)).version
        assert version.evaluator == version.meta["evaluator"] == result.evaluator
        active = store.active()
        assert active is not None and active.to_dict()["evaluator"] == result.evaluator
    finally:
        store.close()
    return result.evaluator, f"sqlite:///{tmp_path / 'preds.db'}"


@pytest.mark.parametrize(("setting", "expected"), [("auto", "hgb-compiled"), ("library", "sklearn")])
def test_batch_and_server_report_the_same_evaluator_and_answers(
        setting: str, expected: str, hgb_model: Path, features_parquet: Path, tmp_path: Path,
        client: httpx.Client) -> None:
    pytest.importorskip("numba")
    evaluator, store_url = _published(hgb_model, features_parquet, tmp_path,
                                      BatchOptions(workers=2, chunk_rows=500, evaluator=setting))
    assert evaluator == expected
    instances = _instances(features_parquet)
    with launched(str(hgb_model), store_url, setting) as (hybrid, model), \
            launched(str(hgb_model), None, setting) as (dynamic, _):
        assert model is not None and model.info.evaluator == expected
        route = f"/v1/models/{model.info.name}:predict"
        static = client.post(hybrid + route, json={"instances": instances}).json()
        computed = client.post(dynamic + route, json={"instances": instances}).json()
        infer = f"/v2/models/{model.info.name}/infer"
        static_v2 = client.post(hybrid + infer, json=_v2(instances)).json()
        computed_v2 = client.post(dynamic + infer, json=_v2(instances)).json()
        metadata = client.get(f"{dynamic}/v2/models/{model.info.name}").json()
    assert [p["source"] for p in static["provenance"]] == ["static"] * ROWS
    assert [p["source"] for p in computed["provenance"]] == ["dynamic"] * ROWS
    for provenance in (static["provenance"], computed["provenance"], static_v2["parameters"]["provenance"],
                       computed_v2["parameters"]["provenance"]):
        assert [p["evaluator"] for p in provenance] == [expected] * ROWS
    assert static["predictions"] == computed["predictions"]  # a tree ensemble: exactly equal
    assert static_v2["outputs"] == computed_v2["outputs"]
    assert metadata["parameters"]["evaluator"] == expected


def test_the_decision_is_the_same_whatever_the_setting_says_elsewhere(hgb_model: Path) -> None:
    """`load_model`, batch runs and the server start from one default."""
    pytest.importorskip("numba")
    assert ServeSettings().evaluator == BatchOptions().evaluator == "auto"
    assert load_model(hgb_model).info.evaluator == "hgb-compiled"
    with pytest.raises(ConfigError, match="evaluator must be one of auto, compiled, library"):
        ServeSettings(evaluator="numba")


def test_a_failing_probe_check_falls_back_and_records_the_library_evaluator(
        hgb_model: Path, features_parquet: Path, tmp_path: Path, client: httpx.Client,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = hgb._kernel()
    assert real is not None

    def off_by_one_ulp(x: Any, *args: Any) -> None:
        real(x, *args)
        out = args[-1]
        out[:, -1] = np.nextafter(out[:, -1], np.inf)

    monkeypatch.setattr(hgb, "_kernel", lambda: off_by_one_ulp)
    # threads: the patch lives in this process (a process pool spawns, not forks, once another test has
    # left a thread running, and spawned workers would load the real kernel)
    evaluator, store_url = _published(hgb_model, features_parquet, tmp_path,
                                      BatchOptions(workers=2, chunk_rows=500, engine="threads"))
    assert evaluator == "sklearn"
    instances = _instances(features_parquet)
    with launched(str(hgb_model), store_url, "auto") as (hybrid, model):
        assert model is not None and model.info.evaluator == "sklearn"
        route = f"/v1/models/{model.info.name}:predict"
        static = client.post(hybrid + route, json={"instances": instances}).json()
        computed = client.post(hybrid + route, json={"instances": [{**instances[0], "key": "new"}]}).json()
    assert {(p["source"], p["evaluator"]) for p in static["provenance"]} == {("static", "sklearn")}
    provenance = computed["provenance"][0]
    assert (provenance["source"], provenance["evaluator"]) == ("dynamic", "sklearn")


def test_static_answers_say_what_their_store_version_recorded(tmp_path: Path, client: httpx.Client) -> None:
    store = SQLiteStore(tmp_path / "preds.db")
    try:
        publish_values(store, ["a"], [1.0])  # published without an evaluator (an older predictions file)
        with live(None, store, name="cat") as url:
            before = client.get(f"{url}/v1/models/cat/predictions/a").json()["provenance"]
            batch = pa.record_batch({"key": ["a"], "computed_at": [time.time()], "value": [2.0]})
            store.publish([batch], model_version="1", meta={"evaluator": "onnxruntime"})
            after = client.post(f"{url}/v1/models/cat:predict", json={"instances": [{"key": "a"}]}).json()
    finally:
        store.close()
    assert (before["store_version"], before["evaluator"]) == ("1", None)
    assert after["predictions"] == [{"value": 2.0}]
    provenance = after["provenance"][0]
    assert (provenance["store_version"], provenance["evaluator"]) == ("2", "onnxruntime")


def test_write_backs_carry_the_live_models_evaluator(client: httpx.Client) -> None:
    with live(add_model(), write_back_ttl_s=60) as url:
        body = {"instances": [{"key": "k", "a": 1.0, "b": 2.0}]}
        first = client.post(f"{url}/v1/models/add:predict", json=body).json()["provenance"][0]
        again = client.post(f"{url}/v1/models/add:predict", json=body).json()["provenance"][0]
    assert (first["evaluator"], again["evaluator"], again["cached"]) == ("python", "python", True)
