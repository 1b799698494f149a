"""A key sent with features other than those its kept prediction was computed from is computed again.

End to end on real servers: a catalogue scored by `augury batch --key` and published keeps each row's
feature hash; a hybrid server answers a key from the store only when the request's features hash the
same, and computes it otherwise (``reason: features_changed``, counted); `--trust-keys` restores the
key-only answer; write-backs keep the hash too; a version published without hashes answers by key.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch
from augury.keys import row_key
from augury.models import Model
from augury.publish import publish_predictions
from augury.store import SQLiteStore
from augury.verify import load_checks

from .helpers import add_model, live, publish_values

N = 200
FEATURES = [f"f{i}" for i in range(4)]


class Catalogue:
    """The hgb model's catalogue (ids p000000...), scored with --key and published to a SQLite store."""

    def __init__(self, folder: Path, model_path: Path) -> None:
        rng = np.random.default_rng(4)
        self.features = {f: rng.normal(size=N) for f in FEATURES}
        self.ids = [f"p{i:06d}" for i in range(N)]
        pq.write_table(pa.table({"id": self.ids, **self.features}), folder / "catalogue.parquet")
        run_batch(str(model_path), folder / "catalogue.parquet", folder / "preds.parquet",
                  BatchOptions(key_columns=("id",), workers=1))
        self.preds = pq.read_table(folder / "preds.parquet")
        self.store = SQLiteStore(folder / "preds.db")
        publish_predictions(folder / "preds.parquet", self.store, load_checks(None))
        labels = dict(zip(self.preds.column("id").to_pylist(), self.preds.column("label").to_pylist(),
                          strict=True))
        self.labels = [labels[i] for i in self.ids]

    def row(self, i: int) -> dict[str, float]:
        return {f: float(self.features[f][i]) for f in FEATURES}

    def first(self, label: int) -> int:
        return self.labels.index(label)


@pytest.fixture()
def catalogue(tmp_path: Path, hgb_model: Path) -> Iterator[Catalogue]:
    made = Catalogue(tmp_path, hgb_model)
    yield made
    made.store.close()


def _predict(client: httpx.Client, url: str, model: Model, *instances: dict[str, Any]) -> dict[str, Any]:
    r = client.post(f"{url}/v1/models/{model.info.name}:predict", json={"instances": list(instances)})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _changed_total(client: httpx.Client, url: str) -> float:
    for line in client.get(f"{url}/metrics").text.splitlines():
        if line.startswith("augury_features_changed_total "):
            return float(line.split()[1])
    raise AssertionError("augury_features_changed_total is not exported")


def test_a_key_sent_with_the_features_of_another_case_is_computed(client: httpx.Client, catalogue: Catalogue,
                                                                  hgb: Model) -> None:
    """The reported case: {"key": <a positive case>, <the features of a negative case>} got the stored
    label 1 in hybrid mode; it is computed from the features it was sent with."""
    positive, negative = catalogue.first(1), catalogue.first(0)
    key = catalogue.ids[positive]
    with live(hgb, catalogue.store) as url:
        own = _predict(client, url, hgb, {"key": key, **catalogue.row(positive)})
        assert own["predictions"][0]["label"] == 1
        assert own["provenance"][0]["source"] == "static" and "reason" not in own["provenance"][0]

        other = _predict(client, url, hgb, {"key": key, **catalogue.row(negative)},
                         {"key": catalogue.ids[negative], **catalogue.row(negative)})
        assert [p["label"] for p in other["predictions"]] == [0, 0]
        changed, stored = other["provenance"]
        assert changed["source"] == "dynamic" and changed["reason"] == "features_changed"
        assert stored["source"] == "static" and "reason" not in stored

        by_key = _predict(client, url, hgb, {"key": key})  # a key alone is answered by key, as ever
        assert by_key["predictions"][0]["label"] == 1 and by_key["provenance"][0]["source"] == "static"
        assert _changed_total(client, url) == 1.0


def test_trust_keys_answers_by_key_alone(client: httpx.Client, catalogue: Catalogue, hgb: Model) -> None:
    positive, negative = catalogue.first(1), catalogue.first(0)
    with live(hgb, catalogue.store, trust_keys=True) as url:
        got = _predict(client, url, hgb, {"key": catalogue.ids[positive], **catalogue.row(negative)})
        assert got["predictions"][0]["label"] == 1
        assert got["provenance"][0]["source"] == "static" and "reason" not in got["provenance"][0]
        assert _changed_total(client, url) == 0.0  # not compared, so not counted


def _until(check: Any, timeout_s: float = 10.0) -> Any:
    """Poll `check` until it returns something true (a write-back to the store is written behind)."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, "not written back in time"
        time.sleep(0.02)
    return found


@pytest.mark.parametrize("where", ["process", "store"])
def test_a_written_back_key_sent_with_other_features_is_computed_again(client: httpx.Client, tmp_path: Path,
                                                                       where: str) -> None:
    model = add_model()
    store = SQLiteStore(tmp_path / "wb.db") if where == "store" else None
    if store is not None:
        publish_values(store, ["k1"], [5.0])
    with live(model, store, write_back_ttl_s=60.0, write_back_to=where) as url:
        first = _predict(client, url, model, {"key": "u1", "a": 3, "b": 4})
        assert first["predictions"] == [{"value": 7.0}]

        def cached(instance: dict[str, Any]) -> Any:
            got = _predict(client, url, model, instance)
            return got if got["provenance"][0].get("cached") else None

        same = _until(lambda: cached({"key": "u1", "a": 3.0, "b": "4"}))  # the same features, once cast
        assert same["predictions"] == [{"value": 7.0}] and "reason" not in same["provenance"][0]

        other = _predict(client, url, model, {"key": "u1", "a": 10, "b": 1})
        assert other["predictions"] == [{"value": 11.0}]
        assert other["provenance"][0]["reason"] == "features_changed"
        assert "cached" not in other["provenance"][0]
        assert _changed_total(client, url) == 1.0
        again = _until(lambda: cached({"key": "u1", "a": 10, "b": 1}))  # written back with its own hash
        assert again["predictions"] == [{"value": 11.0}] and "reason" not in again["provenance"][0]
    if store is not None:
        kept = store.written_back(["u1"], model.info.version)[0]
        assert kept is not None
        assert kept.features_hash == bytes.fromhex(row_key([10.0, 1.0], model.info.inputs))
        store.close()


def test_a_version_published_without_hashes_answers_by_key(client: httpx.Client,
                                                           sqlite_store: SQLiteStore) -> None:
    """Versions published before hashes were kept (or from files without them) have nothing to compare."""
    model = add_model()
    publish_values(sqlite_store, ["k1"], [5.0])
    assert sqlite_store.active() is not None and not sqlite_store.active().features_hash  # type: ignore[union-attr]
    with live(model, sqlite_store) as url:
        got = _predict(client, url, model, {"key": "k1", "a": 1, "b": 1})
        assert got["predictions"] == [{"value": 5.0}] and got["provenance"][0]["source"] == "static"
        assert _changed_total(client, url) == 0.0
