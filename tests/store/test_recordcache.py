"""The SQLite store's record cache: exact because versions are immutable, bounded, TTL still on read."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from augury.errors import ConfigError, StoreError
from augury.store import SQLiteStore, StoredPrediction, open_store
from augury.store.recordcache import ABSENT, ADMIT_EVERY, RecordCache

BatchOf = Callable[..., pa.RecordBatch]


def scores(got: list[StoredPrediction | None]) -> list[Any]:
    return [None if g is None else g.values["score"] for g in got]


def test_cached_answers_equal_uncached_ones(sqlite_path: Path, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(300)]
    cached = SQLiteStore(sqlite_path)
    cached.publish([batch_of(keys)], model_version="m1", ttl_s=3600.0)
    plain = SQLiteStore(sqlite_path, cache_entries=0)
    asked = [*keys[::7], "nope", keys[3], "nope"]

    def in_small_lookups(store: SQLiteStore) -> list[StoredPrediction | None]:  # as a server reads
        return [hit for i in range(0, len(asked), 5) for hit in store.get_many(asked[i:i + 5])]

    first = in_small_lookups(cached)
    again = in_small_lookups(cached)  # now from the cache
    assert cached._pool.cache.hits >= len(asked)
    assert first == again == plain.get_many(asked) == cached.get_many(asked)  # a bulk read skips it
    assert scores(again)[-3:] == [None, 3.0, None]
    again[0].values["score"] = -1.0  # a caller's change does not reach the cache
    assert cached.get_many([keys[0]])[0].values["score"] == 0.0
    cached.close()
    plain.close()


def test_a_new_version_is_never_answered_from_the_old_ones_entries(sqlite_path: Path,
                                                                   batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(["a"])], model_version="m1")
    assert scores(store.get_many(["a", "b"])) == [0.0, None]  # "b" remembered as absent from version 1
    store.publish([batch_of(["b", "a"])], model_version="m2")
    got = store.get_many(["a", "b"])
    assert scores(got) == [1.0, 0.0] and {g.store_version for g in got if g} == {"2"}
    store.rollback()
    assert scores(store.get_many(["a", "b"])) == [0.0, None]
    store.close()


def test_ttl_is_applied_to_cached_records_at_every_read(sqlite_path: Path, batch_of: BatchOf,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLiteStore(sqlite_path)
    now = time.time()
    store.publish([batch_of(["a"], computed_at_us=int((now - 30) * 1e6))], model_version="m", ttl_s=60.0)
    assert scores(store.get_many(["a"])) == [0.0]
    monkeypatch.setattr(time, "time", lambda: now + 45)  # 75 s old now: past its TTL
    assert scores(store.get_many(["a"])) == [None]
    store.close()


def test_the_cache_is_bounded_oldest_out_first_and_once_full_admits_one_miss_in_n() -> None:
    cache = RecordCache(3)
    cache.put_many("t", [("a", [1]), ("b", [2]), ("c", ABSENT)])
    assert cache.get_many("t", ["a", "b", "c", "x"]) == [[1], [2], ABSENT, None]
    assert (cache.hits, cache.misses) == (3, 1)
    cache.put_many("t", [(k, [0]) for k in "defghij"])  # full: the first ADMIT_EVERY - 1 are not kept
    assert cache.get_many("t", list("defghij")) == [None] * 7
    cache.put("t", "k", [4])  # the ADMIT_EVERY-th is, in place of the oldest ("a", though it was read)
    assert ADMIT_EVERY == 8
    assert cache.get_many("t", ["a", "b", "c", "k"]) == [None, [2], ABSENT, [4]]
    assert cache.get_many("u", ["b"]) == [None]  # another table, another entry
    off = RecordCache(0)
    off.put_many("t", [("a", [1])])
    assert off.get_many("t", ["a"]) == [None]


def test_following_a_new_active_version_drops_the_others_entries() -> None:
    cache = RecordCache(4)
    cache.follow("t1")
    cache.put_many("t1", [("a", [1]), ("b", [2])])
    cache.follow("t1")  # the same version: nothing changes
    assert cache.get_many("t1", ["a", "b"]) == [[1], [2]]
    cache.follow("t2")
    assert cache.get_many("t1", ["a", "b"]) == [None, None]
    cache.put_many("t2", [(k, [0]) for k in "abcd"])  # room for the new version's keys at once
    assert None not in cache.get_many("t2", list("abcd"))


def test_a_store_cache_follows_the_active_version(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path, cache_entries=10)
    store.publish([batch_of([f"k{i}" for i in range(10)])], model_version="m1")
    for i in range(10):
        store.get_many([f"k{i}"])
    assert len(store._pool.cache._items) == 10
    store.publish([batch_of(["k0"])], model_version="m2")
    assert scores(store.get_many(["k0"])) == [0.0]
    cache = store._pool.cache
    assert list(cache._items) == ["k0"] and cache._items["k0"][0] == cache._table == "preds_2"
    store.close()


def test_a_corrupt_record_is_an_error_every_time_never_cached(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(["a", "b"])], model_version="m")
    con = sqlite3.connect(sqlite_path)
    (name,) = con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'preds_%'")
    con.execute(f"UPDATE {name[0]} SET v = x'c1' WHERE key = 'b'")
    con.commit()
    con.close()
    fresh = SQLiteStore(sqlite_path)
    for _ in range(2):
        with pytest.raises(StoreError, match="corrupt record for key 'b'"):
            fresh.get_many(["b"])
    assert scores(fresh.get_many(["a"])) == [0.0]
    fresh.close()
    store.close()


def test_threads_share_the_cache(sqlite_path: Path, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(2000)]
    store = SQLiteStore(sqlite_path, cache_entries=500)
    store.publish([batch_of(keys)], model_version="m")
    errors: list[BaseException] = []

    def read(offset: int) -> None:
        try:
            for i in range(3000):
                k = keys[(i * 7 + offset) % len(keys)]
                assert scores(store.get_many([k, "absent"])) == [float(keys.index(k)), None]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store._pool.cache._items) <= 500
    store.close()


def test_options_in_the_url(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}?cache_entries=0&snapshot_s=0.5")
    assert isinstance(store, SQLiteStore)
    assert store._pool.cache.entries == 0 and store._pool._snapshot_s == 0.5
    store.close()
    for bad, message in ((f"sqlite:///{tmp_path / 'a.db'}?cache_entries=-1", "cache_entries"),
                         (f"sqlite:///{tmp_path / 'a.db'}?nope=1", "unknown SQLite store option"),
                         (f"sqlite:///{tmp_path / 'a.db'}?snapshot_s", "bad query string")):
        with pytest.raises(ConfigError, match=message):
            open_store(bad)
    with pytest.raises(ConfigError, match="given twice"):
        open_store(f"sqlite:///{tmp_path / 'a.db'}?max_readers=2", max_readers=3)
    with pytest.raises(ConfigError, match="cache_entries"):
        SQLiteStore(tmp_path / "b.db", cache_entries=-5)
