"""The simple JSON API over HTTP: predict, pure lookups, lookup by key, provenance in body and headers."""

from __future__ import annotations

import time
from datetime import datetime

import httpx

from augury.keys import row_key
from augury.schema import cast_row
from augury.store import SQLiteStore

from .helpers import add_model, live, publish_values


def _iso_age(text: str) -> float:
    assert text.endswith("Z")
    return time.time() - datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_dynamic_predict_with_provenance_and_headers(client: httpx.Client) -> None:
    with live(add_model()) as url:
        r = client.post(f"{url}/v1/models/add:predict", headers={"X-Request-Id": "req-42"},
                        json={"instances": [{"a": 1, "b": 2}, {"a": "0.5", "b": 0.25}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == [{"value": 3.0}, {"value": 0.75}]
    for p in body["provenance"]:
        assert p["source"] == "dynamic" and p["model_version"] == "1"
        assert 0 <= _iso_age(p["computed_at"]) < 60
    assert r.headers["x-request-id"] == "req-42"
    assert r.headers["x-augury-source"] == "static=0,dynamic=2"
    assert r.headers["x-augury-model-version"] == "1"
    assert "x-augury-store-version" not in r.headers


def test_hybrid_mixes_store_and_model_in_request_order(client: httpx.Client,
                                                       sqlite_store: SQLiteStore) -> None:
    model = add_model()
    hashed = row_key(cast_row({"a": 5, "b": 5}, model.info.inputs), model.info.inputs)
    version = publish_values(sqlite_store, ["item-1", hashed], [100.0, 200.0], model_version="1")
    instances = [
        {"a": 1, "b": 1},                       # computed
        {"key": "item-1", "a": 9, "b": 9},      # in the store under its key: the stored value wins
        {"a": 5.0, "b": "5"},                   # in the store under its feature hash (after the cast)
        {"key": "item-2", "a": 2, "b": 2},      # key not stored: computed from the features
        {"key": "item-1"},                      # a pure lookup
    ]
    with live(model, sqlite_store) as url:
        r = client.post(f"{url}/v1/models/add:predict", json={"instances": instances})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["value"] for p in body["predictions"]] == [2.0, 100.0, 200.0, 4.0, 100.0]
    sources = [p["source"] for p in body["provenance"]]
    assert sources == ["dynamic", "static", "static", "dynamic", "static"]
    static = body["provenance"][1]
    assert static["store_version"] == version and static["model_version"] == "1"
    assert 0 <= _iso_age(static["computed_at"]) < 60 and 0 <= static["age_s"] < 60
    assert r.headers["x-augury-source"] == "static=3,dynamic=2"
    assert r.headers["x-augury-store-version"] == version


def test_pure_lookup_miss_is_404_naming_the_key(client: httpx.Client, sqlite_store: SQLiteStore) -> None:
    publish_values(sqlite_store, ["item-1"], [1.0])
    with live(add_model(), sqlite_store) as url:
        instances = [{"a": 1, "b": 1}, {"key": "nope"}]
        r = client.post(f"{url}/v1/models/add:predict", json={"instances": instances})
    assert r.status_code == 404
    assert "instance 1" in r.json()["error"] and "'nope' was never precomputed" in r.json()["error"]


def test_static_mode_marks_a_missing_key_in_its_place(client: httpx.Client,
                                                      sqlite_store: SQLiteStore) -> None:
    """Static mode, several keys: the keys the store holds are answered, a missing one is marked in its
    place (provenance null) and counted in X-Augury-Misses; one key alone is still a 404."""
    version = publish_values(sqlite_store, ["item-1", "item-2"], [1.0, 2.0], model_version="m1")
    with live(None, sqlite_store, name="catalogue") as url:
        instances = [{"key": "item-2"}, {"key": "nope"}, {"key": "item-1"}]
        r = client.post(f"{url}/v1/models/catalogue:predict", json={"instances": instances})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["predictions"] == [{"value": 2.0}, {"error": "not found", "key": "nope"}, {"value": 1.0}]
        assert body["provenance"][1] is None
        assert [p["store_version"] for p in (body["provenance"][0], body["provenance"][2])] == [version] * 2
        assert r.headers["x-augury-misses"] == "1" and r.headers["x-augury-source"] == "static=2,dynamic=0"
        every = client.post(f"{url}/v1/models/catalogue:predict", json={"instances": [{"key": "item-1"}] * 2})
        assert "x-augury-misses" not in every.headers
        one = client.post(f"{url}/v1/models/catalogue:predict", json={"instances": [{"key": "nope"}]})
        assert one.status_code == 404 and "'nope' was never precomputed" in one.json()["error"]
        assert "Miss" in client.get(f"{url}/openapi.json").json()["components"]["schemas"]


def test_lookup_by_key(client: httpx.Client, sqlite_store: SQLiteStore) -> None:
    version = publish_values(sqlite_store, ["item-1", '["a",1]', "a/b"], [1.5, 2.5, 3.5], model_version="m7")
    with live(add_model(), sqlite_store) as url:
        r = client.get(f"{url}/v1/models/add/predictions/item-1")
        assert r.status_code == 200, r.text
        assert r.json()["key"] == "item-1" and r.json()["prediction"] == {"value": 1.5}
        assert r.json()["provenance"]["store_version"] == version
        assert r.json()["provenance"]["model_version"] == "m7"
        assert r.headers["x-augury-source"] == "static=1,dynamic=0"
        assert r.headers["x-augury-model-version"] == "m7"
        assert client.get(f"{url}/v1/models/add/predictions/a/b").json()["prediction"] == {"value": 3.5}
        several = client.post(f"{url}/v1/models/add:predict", json={"instances": [{"key": ["a", 1]}]})
        assert several.json()["predictions"] == [{"value": 2.5}]
        miss = client.get(f"{url}/v1/models/add/predictions/item-9")
        assert miss.status_code == 404 and "never precomputed" in miss.json()["error"]
        assert client.get(f"{url}/v1/models/other/predictions/item-1").status_code == 404


def test_static_mode(client: httpx.Client, sqlite_store: SQLiteStore) -> None:
    publish_values(sqlite_store, ["item-1", "item-2"], [1.0, 2.0], model_version="m1")
    with live(None, sqlite_store, name="catalogue") as url:
        instances = [{"key": "item-2"}, {"key": "item-1"}]
        r = client.post(f"{url}/v1/models/catalogue:predict", json={"instances": instances})
        assert r.json()["predictions"] == [{"value": 2.0}, {"value": 1.0}]
        assert {p["source"] for p in r.json()["provenance"]} == {"static"}
        miss = client.post(f"{url}/v1/models/catalogue:predict", json={"instances": [{"key": "item-3"}]})
        assert miss.status_code == 404 and "never precomputed" in miss.json()["error"]
        features = client.post(f"{url}/v1/models/catalogue:predict", json={"instances": [{"a": 1}]})
        assert features.status_code == 400 and "static mode" in features.json()["error"]
        status = client.get(f"{url}/v1/models/catalogue").json()
        assert status == {"name": "catalogue", "ready": True, "mode": "static", "model_version": "m1"}


def test_dynamic_mode_has_no_lookup(client: httpx.Client) -> None:
    with live(add_model()) as url:
        r = client.get(f"{url}/v1/models/add/predictions/item-1")
        assert r.status_code == 404 and "no prediction store" in r.json()["error"]
        key_only = client.post(f"{url}/v1/models/add:predict", json={"instances": [{"key": "item-1"}]})
        assert key_only.status_code == 404


def test_model_status(client: httpx.Client) -> None:
    with live(add_model()) as url:
        status = client.get(f"{url}/v1/models/add").json()
    assert status["ready"] is True and status["mode"] == "dynamic" and status["model_version"] == "1"
    assert [f["name"] for f in status["inputs"]] == ["a", "b"]
