"""Readiness follows the store (issue 11): a static server whose store cannot answer says so (503, with a
reason and no path), and is ready again once the store answers; a hybrid one stays ready, computing."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from augury.serve.service import STORE_CHECK_S
from augury.store import SQLiteStore

from .helpers import add_model, live, publish_values


def _until(check: Callable[[], Any], within_s: float = 4 * STORE_CHECK_S + 2) -> Any:
    """Poll `check` until it returns something truthy (readiness answers are reused for STORE_CHECK_S)."""
    deadline = time.monotonic() + within_s
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _drop(path: Path, *tables: str) -> None:
    """Drop `tables` through another connection, as another process damaging the store would."""
    con = sqlite3.connect(path)
    for name in tables:
        con.execute(f"DROP TABLE {name}")
    con.commit()
    con.close()


def _garbage(path: Path) -> None:
    """Overwrite the database file (and its WAL) in place with bytes that are no SQLite file."""
    for name in (str(path), f"{path}-wal"):
        if os.path.exists(name):
            with open(name, "r+b") as f:
                f.write(b"not a database " * (os.path.getsize(name) // 15 + 1))


BREAKS: dict[str, Callable[[Path], None]] = {
    "version table dropped": lambda path: _drop(path, "preds_1"),
    "pointer and versions dropped": lambda path: _drop(path, "augury_pointer", "augury_versions"),
    "file overwritten": _garbage,
}


@pytest.mark.parametrize("brk", list(BREAKS), ids=list(BREAKS))
def test_a_static_server_is_not_ready_while_its_store_cannot_answer(client: httpx.Client, tmp_path: Path,
                                                                     brk: str) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    publish_values(store, ["k1"], [1.0])
    try:
        with live(None, store, name="cat") as url:
            assert client.get(f"{url}/v2/health/ready").json() == {"ready": True}
            assert client.get(f"{url}/v1/models/cat/predictions/k1").status_code == 200  # (now cached)
            BREAKS[brk](path)
            ready = _until(lambda: (r := client.get(f"{url}/v2/health/ready")).status_code == 503 and r)
            assert ready, "readiness stayed 200 while the store could not answer"
            assert ready.json() == {"ready": False, "error": "the prediction store cannot answer right now"}
            model = client.get(f"{url}/v2/models/cat/ready")
            assert model.status_code == 503 and model.json()["ready"] is False
            assert model.json()["error"] == "the prediction store cannot answer right now"
            # a store that answers but cannot serve (tables gone, not a database) is broken, not away:
            # a 500 whose body names only the request id (issue 13's classification); readiness says 503
            lookup = client.get(f"{url}/v1/models/cat/predictions/k2")
            assert lookup.status_code == 500 and "request id" in lookup.json()["error"]
            for r in (ready, model, lookup):
                assert str(tmp_path) not in r.text and "no such table" not in r.text
                assert "not a database" not in r.text
    finally:
        store.close()


def test_readiness_comes_back_with_the_store(client: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    publish_values(store, ["k1"], [1.0])
    try:
        with live(None, store, name="cat") as url:
            _drop(path, "preds_1")
            assert _until(lambda: client.get(f"{url}/v2/health/ready").status_code == 503)
            publish_values(store, ["k1", "k2"], [1.0, 2.0])  # a new version: the store answers again
            assert _until(lambda: client.get(f"{url}/v2/health/ready").status_code == 200)
            assert client.get(f"{url}/v2/models/cat/ready").json()["ready"] is True
            assert client.get(f"{url}/v1/models/cat/predictions/k2").status_code == 200
    finally:
        store.close()


def test_a_hybrid_server_stays_ready_with_a_failing_store_and_computes(client: httpx.Client,
                                                                       tmp_path: Path) -> None:
    """Documented choice (docs/serve.md): hybrid computes every example that has features, so it stays
    ready; its readiness body says the store is down, and key-only lookups fail with the store's error
    (here a broken store, a table gone: 500; an unreachable one is 503, tests/serve/test_redis_*)."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    publish_values(store, ["k1"], [5.0])
    try:
        with live(add_model(), store) as url:
            _drop(path, "preds_1")
            ready = _until(lambda: "degraded" in (r := client.get(f"{url}/v2/health/ready")).json() and r)
            assert ready and ready.status_code == 200 and ready.json()["ready"] is True
            assert ready.json()["degraded"].startswith("the prediction store cannot answer right now")
            assert client.get(f"{url}/v2/models/add/ready").json()["ready"] is True
            r = client.post(f"{url}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 1}]})
            assert r.status_code == 200 and r.json()["provenance"][0]["source"] == "dynamic"
            assert client.post(f"{url}/v1/models/add:predict",
                               json={"instances": [{"key": "k9"}]}).status_code == 500
    finally:
        store.close()
