"""Write-back: dynamic predictions kept beside the versions, per model version, until they expire (every
backend), shared through the file and left out of the versions (SQLite)."""

from __future__ import annotations

import math
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from augury.errors import InputError, StoreError
from augury.store import PredictionStore, SQLiteStore, WrittenBack
from augury.store.base import iso
from augury.store.redis_store import RedisStore

BatchOf = Callable[..., pa.RecordBatch]


def row(key: str, score: float, *, model: str = "m1", ttl_s: float = 60.0, ago_s: float = 0.0) -> WrittenBack:
    now = time.time()
    return WrittenBack(key, {"label": 1, "score": score}, model, now - ago_s, now - ago_s + ttl_s)


def scores(got: list[WrittenBack | None]) -> list[float | None]:
    return [None if g is None else g.values["score"] for g in got]


def test_written_back_rows_round_trip_per_model_version(store: PredictionStore) -> None:
    assert store.written_back(["a"], "m1") == [None]  # nothing written yet (no table either)
    exact = 0.1 + 0.2
    store.write_back([row("a", exact), row("b", 2.0), row("a", 3.0, model="m2")])
    got = store.written_back(["a", "b", "c", "a"], "m1")
    assert scores(got) == [exact, 2.0, None, exact]  # floats to the bit, aligned, duplicates too
    assert got[0] is not None and got[0].values["label"] == 1 and got[0].model_version == "m1"
    assert math.isclose(got[0].expires_at - got[0].computed_at, 60.0, abs_tol=1e-5)
    assert scores(store.written_back(["a"], "m2")) == [3.0]
    assert scores(store.written_back(["a"], "m3")) == [None]
    store.write_back([row("a", 4.0), row("a", 5.0)])  # replaces; the last of several wins
    assert scores(store.written_back(["a"], "m1")) == [5.0]
    got[1].values["score"] = -1.0  # a caller's change does not reach the store
    assert scores(store.written_back(["b"], "m1")) == [2.0]
    store.write_back([])


def test_expired_rows_are_never_returned_and_are_pruned(store: PredictionStore) -> None:
    store.write_back([row("old", 1.0, ttl_s=10.0, ago_s=11.0), row("new", 2.0, ttl_s=10.0, ago_s=5.0)])
    assert scores(store.written_back(["old", "new"], "m1")) == [None, 2.0]
    # (Redis never keeps an expired row: it was written with Redis's own expiry, so there is none to prune;
    # tests/store/test_redis.py checks that Redis removed it)
    assert store.prune_written_back() == (0 if isinstance(store, RedisStore) else 1)
    assert store.prune_written_back() == 0
    store.write_back([row("gone", 3.0, ttl_s=1.0, ago_s=2.0)])
    store.gc()  # gc prunes too
    assert store.prune_written_back() == 0
    assert scores(store.written_back(["new"], "m1")) == [2.0]


def test_write_backs_are_outside_the_versions(store: PredictionStore, batch_of: BatchOf) -> None:
    store.publish([batch_of(["a"])], model_version="m1")
    store.write_back([row("b", 7.0)])
    assert store.get_many(["a", "b"])[1] is None  # never answered as a stored (static) prediction
    store.publish([batch_of(["c"])], model_version="m1")
    store.rollback()
    store.delete("2")
    store.gc(keep=0)
    assert scores(store.written_back(["b"], "m1")) == [7.0]
    assert store.versions()[-1].row_count == 1


@pytest.mark.parametrize("bad, message", [
    (WrittenBack("", {"s": 1.0}, "m", 0.0, 1.0), "empty key"),
    (WrittenBack("k", {"s": 1.0}, "", 0.0, 1.0), "empty key or model version"),
    (WrittenBack("k", {}, "m", 0.0, 1.0), "no values"),
    (WrittenBack("k", {"s": 1.0}, "m", 0.0, math.inf), "non-finite"),
    ("not a row", "not a WrittenBack"),
])
def test_bad_rows_are_input_errors_and_write_nothing(store: PredictionStore, bad: object,
                                                     message: str) -> None:
    with pytest.raises(InputError, match=message):
        store.write_back([row("fine", 1.0), bad])  # type: ignore[list-item]
    assert store.written_back(["fine"], "m1") == [None]


def test_sqlite_write_backs_are_shared_through_the_file(sqlite_path: Path) -> None:
    """Another store object on the file (another server process) reads what this one wrote; they
    survive reopening; values MessagePack cannot hold are an InputError."""
    one = SQLiteStore(sqlite_path, snapshot_s=0.0)
    two = SQLiteStore(sqlite_path, snapshot_s=0.0)
    assert two.written_back(["a"], "m1") == [None]
    one.write_back([row("a", 1.5)])
    assert scores(two.written_back(["a"], "m1")) == [1.5]
    with pytest.raises(InputError, match="cannot be stored"):
        one.write_back([WrittenBack("x", {"s": object()}, "m1", 0.0, 1.0)])
    one.close()
    two.close()
    again = SQLiteStore(sqlite_path)
    assert scores(again.written_back(["a"], "m1")) == [1.5]
    again.close()


def test_sqlite_a_corrupt_write_back_is_a_store_error(sqlite_path: Path) -> None:
    store = SQLiteStore(sqlite_path)
    store.write_back([row("a", 1.0)])
    con = sqlite3.connect(sqlite_path)
    con.execute("UPDATE augury_writeback SET v = x'c1'")
    con.commit()
    con.close()
    fresh = SQLiteStore(sqlite_path)
    with pytest.raises(StoreError, match="corrupt"):
        fresh.written_back(["a"], "m1")
    fresh.close()
    store.close()


def test_times_read_back_print_as_they_did(store: PredictionStore) -> None:
    """A written-back `computed_at` is shown (ISO, microseconds) exactly as the answer that made it was."""
    rng = random.Random(3)
    stamps = [1.7e9 + rng.random() * 1e8 for _ in range(500)]
    store.write_back([WrittenBack(f"k{i}", {"s": 1.0}, "m", t, 4e9) for i, t in enumerate(stamps)])
    got = store.written_back([f"k{i}" for i in range(len(stamps))], "m")
    assert [iso(g.computed_at) for g in got if g is not None] == [iso(t) for t in stamps]


def test_a_written_back_row_keeps_its_features_hash(store: PredictionStore) -> None:
    """The hash of the features a write-back was computed from comes back with it; a row without one
    (as written before hashes were kept) still reads; a hash that is not 16 bytes is refused."""
    now, digest = time.time(), bytes(range(16))
    store.write_back([WrittenBack("a", {"s": 1.5}, "m1", now, now + 60, digest),
                      WrittenBack("b", {"s": 2.0}, "m1", now, now + 60)])
    a, b = store.written_back(["a", "b"], "m1")
    assert a is not None and b is not None
    assert (a.values, a.features_hash, b.values, b.features_hash) == ({"s": 1.5}, digest, {"s": 2.0}, None)
    with pytest.raises(InputError, match="not 16 bytes"):
        store.write_back([WrittenBack("c", {"s": 1.0}, "m1", now, now + 60, b"short")])
