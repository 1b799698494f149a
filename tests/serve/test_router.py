"""Hybrid routing end to end: static and dynamic answers agree on real models, versions switch under load
with no failed request, and write-back serves dynamic predictions again until their TTL passes."""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch
from augury.models import Model, load_model
from augury.publish import publish_predictions
from augury.store import SQLiteStore
from augury.verify import load_checks

from .helpers import add_model, live, publish_values, review_rows, until


def _xgboost(folder: Path) -> tuple[Path, dict[str, list[Any]]]:
    from xgboost import XGBClassifier

    rng = np.random.default_rng(5)
    x = rng.normal(size=(400, 4))
    y = (x[:, 0] - x[:, 1] * x[:, 2] > 0).astype(int)
    path = folder / "xgb.json"
    XGBClassifier(n_estimators=20, max_depth=3, random_state=0).fit(x, y).save_model(path)
    return path, {f"f{j}": np.round(x[:120, j], 6).tolist() for j in range(4)}


def _onnx(folder: Path) -> tuple[Path, dict[str, list[Any]]]:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 4))
    y = np.digitize(x[:, 0] + 0.5 * x[:, 3], [-0.5, 0.5])
    est = LogisticRegression(max_iter=1000).fit(x, y)
    path = folder / "lr.onnx"
    path.write_bytes(to_onnx(est, initial_types=[("input", FloatTensorType([None, 4]))],
                             options={id(est): {"zipmap": False}}).SerializeToString())
    return path, {f"f{j}": x[:120, j].tolist() for j in range(4)}  # float64: both paths cast to float32


@pytest.mark.parametrize("kind", ["text_pipeline", "xgboost", "onnx"])
def test_static_and_dynamic_answers_agree(kind: str, tmp_path: Path, text_pipeline: Path,
                                          client: httpx.Client) -> None:
    if kind == "text_pipeline":
        path, columns, exact = text_pipeline, review_rows(120, seed=21), False
    elif kind == "xgboost":
        (path, columns), exact = _xgboost(tmp_path), True
    else:
        (path, columns), exact = _onnx(tmp_path), False
    pq.write_table(pa.table(columns), tmp_path / "catalogue.parquet")
    run_batch(str(path), tmp_path / "catalogue.parquet", tmp_path / "preds.parquet", BatchOptions(workers=1))
    store = SQLiteStore(tmp_path / "preds.db")
    try:
        publish_predictions(tmp_path / "preds.parquet", store, load_checks(None))
        model = load_model(path, threads=1)
        instances = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
        route = f"/v1/models/{model.info.name}:predict"
        with live(model, store) as hybrid, live(model, max_delay_ms=5) as dynamic:
            static = client.post(hybrid + route, json={"instances": instances})
            assert static.status_code == 200, static.text
            assert static.headers["x-augury-source"] == f"static={len(instances)},dynamic=0"
            computed = _dynamic_in_mixed_batches(dynamic + route, instances)
    finally:
        store.close()
    stored = static.json()
    assert {p["model_version"] for p in stored["provenance"]} == {model.info.version}
    _assert_agree(stored["predictions"], computed, exact)


def _dynamic_in_mixed_batches(url: str, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score `instances` as concurrent one-row requests and as multi-row requests of random sizes."""
    out: list[dict[str, Any] | None] = [None] * len(instances)

    def post(start: int, stop: int) -> None:
        with httpx.Client(timeout=30) as c:
            r = c.post(url, json={"instances": instances[start:stop]})
        assert r.status_code == 200, r.text
        assert {p["source"] for p in r.json()["provenance"]} == {"dynamic"}
        out[start:stop] = r.json()["predictions"]

    spans, start, rng = [], 0, random.Random(4)
    while start < len(instances):
        size = 1 if start < 40 else rng.randint(2, 30)
        spans.append((start, min(start + size, len(instances))))
        start += size
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(post, a, b) for a, b in spans]:
            f.result()
    assert all(o is not None for o in out)
    return [o for o in out if o is not None]


def _assert_agree(static: list[dict[str, Any]], dynamic: list[dict[str, Any]], exact: bool) -> None:
    assert len(static) == len(dynamic)
    for i, (s, d) in enumerate(zip(static, dynamic, strict=True)):
        assert s.keys() == d.keys(), i
        for name, value in s.items():
            if isinstance(value, float) and not exact:
                assert d[name] == pytest.approx(value, rel=1e-9, abs=0), (i, name)
            else:
                assert d[name] == value, (i, name)


def test_store_versions_switch_under_load_without_a_failed_request(tmp_path: Path) -> None:
    keys = [f"k{i}" for i in range(200)]
    publisher = SQLiteStore(tmp_path / "live.db")
    served = SQLiteStore(tmp_path / "live.db")
    publish_values(publisher, keys, [1000.0 + i for i in range(200)])
    stop = threading.Event()
    failures: list[str] = []
    seen: list[list[int]] = []

    def client_loop(url: str, seed: int) -> None:
        rng, versions = random.Random(seed), list[int]()
        seen.append(versions)
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                picked = rng.sample(range(200), 10 if seed % 2 else 100)  # (100: looked up on threads)
                instances = [{"key": keys[i]} for i in picked]
                r = c.post(f"{url}/v1/models/cat:predict", json={"instances": instances})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                body = r.json()
                store_versions = {p["store_version"] for p in body["provenance"]}
                if len(store_versions) != 1:
                    failures.append(f"one response mixed store versions {store_versions}")
                version = int(store_versions.pop())
                for i, prediction in zip(picked, body["predictions"], strict=True):
                    if prediction["value"] != 1000.0 * version + i:
                        failures.append(f"key k{i} answered {prediction} from version {version}")
                versions.append(version)

    try:
        with live(None, served, name="cat") as url, concurrent.futures.ThreadPoolExecutor(4) as pool:
            clients = [pool.submit(client_loop, url, seed) for seed in range(4)]
            for version in (2, 3):
                time.sleep(0.4)
                values = [1000.0 * version + i for i in range(200)]
                assert publish_values(publisher, keys, values) == str(version)
            time.sleep(0.4)
            stop.set()
            for f in clients:
                f.result()
    finally:
        stop.set()
        publisher.close()
        served.close()
    assert failures == []
    assert all(v == sorted(v) for v in seen)  # a client never goes back to an older version
    assert {v for versions in seen for v in versions} == {1, 2, 3}
    assert sum(len(v) for v in seen) > 50


def test_write_back_serves_dynamic_predictions_until_their_ttl(client: httpx.Client) -> None:
    with live(add_model(), write_back_ttl_s=0.5) as url:
        predict = f"{url}/v1/models/add:predict"
        first = client.post(predict, json={"instances": [{"a": 1, "b": 2}, {"key": "u1", "a": 3, "b": 4}]})
        assert [p.get("cached") for p in first.json()["provenance"]] == [None, None]
        again = client.post(predict, json={"instances": [{"a": 1.0, "b": "2"}, {"key": "u1"}]})
        assert again.status_code == 200, again.text
        assert again.json()["predictions"] == [{"value": 3.0}, {"value": 7.0}]
        provenance = again.json()["provenance"]
        assert [p["cached"] for p in provenance] == [True, True]
        assert [p["source"] for p in provenance] == ["dynamic", "dynamic"]
        assert provenance[0]["computed_at"] == first.json()["provenance"][0]["computed_at"]
        assert client.get(f"{url}/v1/models/add/predictions/u1").json()["prediction"] == {"value": 7.0}
        time.sleep(0.6)
        expired = client.post(predict, json={"instances": [{"a": 1, "b": 2}]})
        assert "cached" not in expired.json()["provenance"][0]
        assert client.post(predict, json={"instances": [{"key": "u1"}]}).status_code == 404



def test_write_back_to_the_store_is_shared_and_expires(client: httpx.Client, tmp_path: Path) -> None:
    """With a store, dynamic predictions are written back to it: a second server on the same file (another
    worker) answers them too, as cached dynamic predictions, until their TTL passes; they never enter a
    store version."""
    path = tmp_path / "shared.db"
    first_store, second_store = SQLiteStore(path), SQLiteStore(path)
    publish_values(first_store, ["k1"], [5.0])
    with live(add_model(), first_store, write_back_ttl_s=1.5) as one, \
            live(add_model(), second_store, write_back_ttl_s=1.5) as two:
        body = {"instances": [{"a": 1, "b": 2}, {"key": "u1", "a": 3, "b": 4}, {"key": "k1"}]}
        first = client.post(f"{one}/v1/models/add:predict", json=body).json()
        assert [p["source"] for p in first["provenance"]] == ["dynamic", "dynamic", "static"]
        assert [p.get("cached") for p in first["provenance"]] == [None, None, None]

        def cached_on_two() -> Any:
            r = client.post(f"{two}/v1/models/add:predict", json={"instances": [{"a": 1.0, "b": "2"},
                                                                                  {"key": "u1"}]})
            return r.json() if r.status_code == 200 else None

        again = until(cached_on_two)
        assert again["predictions"] == [{"value": 3.0}, {"value": 7.0}]
        assert [(p["source"], p["cached"]) for p in again["provenance"]] == [("dynamic", True)] * 2
        assert again["provenance"][0]["computed_at"] == first["provenance"][0]["computed_at"]
        assert client.get(f"{two}/v1/models/add/predictions/u1").json()["prediction"] == {"value": 7.0}
        assert first_store.get_many(["u1"]) == [None]  # not in any store version
        metrics = client.get(f"{one}/metrics").text
        assert 'augury_writeback_rows_total{result="written"} 2.0' in metrics
        time.sleep(1.6)
        expired = client.post(f"{two}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 2}]})
        assert "cached" not in expired.json()["provenance"][0]
    assert first_store.written_back(["u1"], "1") == [None]
    first_store.close()
    second_store.close()


def test_many_write_backs_in_one_request(client: httpx.Client, tmp_path: Path) -> None:
    """Past INLINE_LOOKUP_KEYS keys the write-backs are read on a thread: the answers are the same."""
    store = SQLiteStore(tmp_path / "many.db")
    publish_values(store, ["k1"], [5.0])
    body = {"instances": [{"a": i, "b": 0.5} for i in range(100)]}
    with live(add_model(), store, write_back_ttl_s=60.0) as url:
        first = client.post(f"{url}/v1/models/add:predict", json=body).json()

        def all_cached() -> Any:
            again = client.post(f"{url}/v1/models/add:predict", json=body).json()
            return again if all(p.get("cached") for p in again["provenance"]) else None

        again = until(all_cached)
        assert again["predictions"] == first["predictions"] == [{"value": i + 0.5} for i in range(100)]
    store.close()


def test_write_back_failures_lose_only_the_reuse(client: httpx.Client, tmp_path: Path) -> None:
    """A store that cannot take write-backs (closed here) costs only their reuse: requests are answered,
    the failed rows are counted."""
    store = SQLiteStore(tmp_path / "closed.db")
    publish_values(store, ["k1"], [5.0])
    with live(add_model(), store, write_back_ttl_s=60.0) as url:
        store.close()
        r = client.post(f"{url}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 1}]})
        assert r.status_code == 200 and r.json()["predictions"] == [{"value": 2.0}]
        failed = until(lambda: 'augury_writeback_rows_total{result="failed"} 1.0'
                        in client.get(f"{url}/metrics").text)
        assert failed


def test_hybrid_falls_back_to_the_model_when_the_store_fails(client: httpx.Client, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "gone.db")
    publish_values(store, ["k1"], [5.0])
    with live(add_model(), store) as url:
        store.close()  # every lookup now fails with StoreError
        r = client.post(f"{url}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 1}]})
        assert r.status_code == 200 and r.json()["provenance"][0]["source"] == "dynamic"
        lookup = client.post(f"{url}/v1/models/add:predict", json={"instances": [{"key": "k1"}]})
        assert lookup.status_code == 503 and "retry-after" in lookup.headers
        assert lookup.json()["error"] == (f"the prediction store cannot answer right now; retry later "
                                          f"(request id {lookup.headers['x-request-id']})")
        metrics = client.get(f"{url}/metrics").text
        assert "augury_store_errors_total 2.0" in metrics


def test_version_match_and_model_mismatch(client: httpx.Client, sqlite_store: SQLiteStore) -> None:
    model: Model = add_model(version="2")
    publish_values(sqlite_store, ["k1"], [5.0], model_version="1")
    request = {"instances": [{"key": "k1", "a": 1, "b": 1}]}
    with live(model, sqlite_store) as url:
        r = client.post(f"{url}/v1/models/add:predict", json=request)
        assert r.json()["predictions"] == [{"value": 5.0}]
    with live(model, sqlite_store, require_version_match=True) as url:
        r = client.post(f"{url}/v1/models/add:predict", json=request)
        assert r.json()["predictions"] == [{"value": 2.0}]
        assert r.json()["provenance"][0]["model_version"] == "2"
