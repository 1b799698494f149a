"""A key sent with features other than those its kept prediction was computed from is computed again.

End to end on real servers: a catalogue scored by `augury batch --key` and published keeps each row's
feature hash; a hybrid server answers a key from the store only when the request's features hash the
same, and computes it otherwise (``reason: features_changed``, counted); `--trust-keys` restores the
key-only answer; write-backs keep the hash too; a version published without hashes answers by key.
"""

from __future__ import annotations

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

from .helpers import add_model, live, publish_values, until

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

        same = until(lambda: cached({"key": "u1", "a": 3.0, "b": "4"}))  # the same features, once cast
        assert same["predictions"] == [{"value": 7.0}] and "reason" not in same["provenance"][0]

        other = _predict(client, url, model, {"key": "u1", "a": 10, "b": 1})
        assert other["predictions"] == [{"value": 11.0}]
        assert other["provenance"][0]["reason"] == "features_changed"
        assert "cached" not in other["provenance"][0]
        assert _changed_total(client, url) == 1.0
        again = until(lambda: cached({"key": "u1", "a": 10, "b": 1}))  # written back with its own hash
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


# Static mode: no model to compute changed features with, so they are refused (409), by the input schema
# the store version recorded when it was published.


def _static(client: httpx.Client, url: str, model: Model, *instances: dict[str, Any]) -> httpx.Response:
    return client.post(f"{url}/v1/models/{model.info.name}:predict", json={"instances": list(instances)})


def test_publish_records_the_models_input_schema(catalogue: Catalogue, hgb: Model) -> None:
    active = catalogue.store.active()
    assert active is not None and active.features_hash
    assert active.meta["inputs"] == hgb.info.inputs.to_list()


def test_static_refuses_a_key_sent_with_the_features_of_another_case(
        client: httpx.Client, catalogue: Catalogue, hgb: Model) -> None:
    positive, negative = catalogue.first(1), catalogue.first(0)
    key = catalogue.ids[positive]
    with live(None, catalogue.store) as url:
        own = _static(client, url, hgb, {"key": key, **catalogue.row(positive)})
        assert own.status_code == 200, own.text
        assert own.json()["predictions"][0]["label"] == 1
        assert own.json()["provenance"][0]["source"] == "static"
        as_text = {f: str(v) for f, v in catalogue.row(positive).items()}
        same = _static(client, url, hgb, {"key": key, **as_text})
        assert same.status_code == 200, same.text  # the same features once cast

        other = _static(client, url, hgb, {"key": key, **catalogue.row(negative)})
        assert other.status_code == 409, other.text
        error = other.json()["error"]
        assert f"the features sent with key {key!r} differ from those its stored prediction" in error
        assert "instance" not in error  # one key: nothing to point at

        by_key = _static(client, url, hgb, {"key": key})  # a key alone is answered by key, as ever
        assert by_key.status_code == 200 and by_key.json()["predictions"][0]["label"] == 1
        assert _changed_total(client, url) == 1.0


def test_static_marks_a_changed_key_in_its_place_among_several(client: httpx.Client, catalogue: Catalogue,
                                                               hgb: Model) -> None:
    """As a missing key is marked among several (the others are answered), so is a changed one."""
    positive, negative = catalogue.first(1), catalogue.first(0)
    with live(None, catalogue.store) as url:
        got = _static(client, url, hgb,
                      {"key": catalogue.ids[negative], **catalogue.row(negative)},
                      {"key": catalogue.ids[positive], **catalogue.row(negative)},
                      {"key": "nobody"},
                      {"key": catalogue.ids[positive]})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["predictions"][0]["label"] == 0 and body["predictions"][3]["label"] == 1
        assert body["predictions"][1] == {"error": "features changed", "key": catalogue.ids[positive]}
        assert body["predictions"][2] == {"error": "not found", "key": "nobody"}
        assert body["provenance"][1] is None and body["provenance"][2] is None
        assert got.headers["x-augury-misses"] == "1"  # the changed key is there: no miss
        assert _changed_total(client, url) == 1.0


def test_static_features_must_fit_the_recorded_schema(client: httpx.Client, catalogue: Catalogue,
                                                      hgb: Model) -> None:
    """Features sent with a key are the model's features: cast as a hybrid server casts them."""
    row = catalogue.row(0)
    del row["f3"]
    with live(None, catalogue.store) as url:
        got = _static(client, url, hgb, {"key": catalogue.ids[0], **row})
        assert got.status_code == 400, got.text
        assert "instance 0" in got.json()["error"] and "f3" in got.json()["error"]


def test_static_trust_keys_answers_by_key_alone(client: httpx.Client, catalogue: Catalogue,
                                                hgb: Model) -> None:
    positive, negative = catalogue.first(1), catalogue.first(0)
    with live(None, catalogue.store, trust_keys=True) as url:
        got = _static(client, url, hgb, {"key": catalogue.ids[positive], **catalogue.row(negative)})
        assert got.status_code == 200, got.text
        assert got.json()["predictions"][0]["label"] == 1
        assert _changed_total(client, url) == 0.0  # not compared, so not counted


def test_static_a_version_that_recorded_no_schema_answers_by_key(client: httpx.Client, catalogue: Catalogue,
                                                                 hgb: Model) -> None:
    """A version published before the input schema was recorded keeps hashes it cannot compare: by key."""
    preds = catalogue.preds
    columns = [c for c in preds.column_names if c not in ("id", "model_version")]
    table = pa.table({"key": preds.column("id"), **{c: preds.column(c) for c in columns}})
    before = catalogue.store.active()
    assert before is not None
    meta = {k: v for k, v in before.meta.items() if k != "inputs"}  # as publish recorded it before
    version = catalogue.store.publish(table.to_batches(), model_version=hgb.info.version, meta=meta)
    assert version.features_hash and "inputs" not in version.meta
    positive, negative = catalogue.first(1), catalogue.first(0)
    with live(None, catalogue.store) as url:
        got = _static(client, url, hgb, {"key": catalogue.ids[positive], **catalogue.row(negative)})
        assert got.status_code == 200, got.text
        assert got.json()["predictions"][0]["label"] == 1
        assert got.json()["provenance"][0]["store_version"] == version.version
        assert _changed_total(client, url) == 0.0
