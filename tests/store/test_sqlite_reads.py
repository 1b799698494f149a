"""`store.sqlite_reads`: every read borrows a reader and, when it fails, translates the error and never
lends that reader again. `get_many` has that block inline (it is on every static request) and the
other reads share `StoreReads._read`: this holds the two copies to one behaviour, on a real file."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from augury.errors import StoreBroken, StoreError
from augury.store import SQLiteStore
from augury.store.base import WrittenBack

READS: dict[str, Callable[[SQLiteStore], Any]] = {
    "lookup": lambda store: store.get_many(["a"]),
    "lookup, many keys": lambda store: store.get_many(["a", "b", "c"]),
    "lookup_view": lambda store: store.lookup_view(),
    "versions": lambda store: store.versions(),
    "active": lambda store: store.active(),
    "written_back": lambda store: store.written_back(["a"], "1"),
}
DOING = {"lookup, many keys": "lookup", "lookup_view": "lookup", "versions": "listing versions",
         "active": "reading the active version", "written_back": "reading write-backs"}


@pytest.mark.parametrize("read", list(READS))
def test_a_failed_read_is_a_store_error_and_its_reader_is_never_lent_again(
        tmp_path: Path, batch_of: Callable[..., Any], read: str) -> None:
    store = SQLiteStore(tmp_path / "s.db", max_readers=1, cache_entries=0)  # (every lookup reads SQLite)
    try:
        store.publish([batch_of(["a", "b"])], model_version="1")
        now = time.time()
        store.write_back([WrittenBack("a", {"score": 1.0}, "1", now, now + 60)])
        READS[read](store)
        reader = store._pool.acquire()  # the pool's one reader, its connection closed under it
        reader.con.close()
        store._pool.release(reader)
        doing = re.escape(DOING.get(read, read))
        with pytest.raises(StoreError, match=rf"^prediction store \S+s\.db: {doing} failed: Cannot operate "
                                             rf"on a closed database"):
            READS[read](store)
        assert store._pool.open_readers == 0  # discarded
        READS[read](store)  # a new reader
        assert store._pool.open_readers == 1
    finally:
        store.close()


def test_a_damaged_record_is_the_same_store_error_through_get_many_and_read(
        tmp_path: Path, batch_of: Callable[..., Any]) -> None:
    """The StoreError branch (`sqlite_read`'s corrupt record): get_many's inline block and `_read` running
    the same lookup raise the same error, with the same cause, and discard the reader alike."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.publish([batch_of(["a", "b"])], model_version="1")
    store.close()
    con = sqlite3.connect(path)
    (table,) = con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'preds_%'"
                           ).fetchone()
    con.execute(f"UPDATE {table} SET v = x'c1' WHERE key = 'b'")
    con.commit()
    con.close()
    paths: dict[str, Callable[[SQLiteStore], Any]] = {
        "get_many": lambda s: s.get_many(["b"]),
        "_read": lambda s: s._read("lookup", lambda reader, generation: reader.lookup(["b"], generation)),
    }
    outcomes = []
    for read in paths.values():
        damaged = SQLiteStore(path, max_readers=1, cache_entries=0)
        try:
            damaged.get_many(["a"])
            with pytest.raises(StoreError) as raised:
                read(damaged)
            error = raised.value
            outcomes.append((type(error), str(error), type(error.__cause__), damaged._pool.open_readers))
            assert damaged.get_many(["a"])[0] is not None  # a new reader
        finally:
            damaged.close()
    assert outcomes[0] == outcomes[1]
    kind, message, cause, readers = outcomes[0]
    assert kind is StoreBroken and "corrupt record for key 'b'" in message and cause is not type(None)
    assert readers == 0  # discarded
