"""`store.sqlite_reads`: every read borrows a reader and, when it fails, translates the error and never
lends that reader again. `get_many` has that block inline (it is on every static request) and the
other reads share `StoreReads._read`: this holds the two copies to one behaviour, on a real file."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from augury.errors import StoreError
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
