"""The SQLite store's read path: a bounded pool of reader connections and chunked key lookups.

Thread-safety: `get_many` may be called from any number of threads. Each call borrows one reader
connection from a pool of at most `max_readers` (created on demand; WAL lets them all read at once) and
gives it back; a caller that finds all of them busy waits up to `pool_timeout_s`, then gets a StoreError.

Each reader connection caches the active version's table and view and re-reads them only when
``PRAGMA data_version`` says another connection committed something (about 1 µs, no I/O; see
`benchmarks/store_bench.py`), so a switch made by another connection or process is seen on the next call
without reopening. A lookup of one chunk is one statement: it selects from the cached table joined with
the ``pragma_data_version`` table, so the check and the rows come from one snapshot; if the data version
moved, the answer is thrown away and the lookup done again against the re-read active version. Versions
are immutable, so a lookup that reads one table sees one version; a lookup of more than one chunk runs in
one read transaction, so a version dropped meanwhile stays readable to it, and a table dropped between
the pointer check and the read is noticed and the lookup retried once.

Lookups never bind more than `CHUNK` keys per statement; statement sizes are rounded up to a power of two
(padding with a repeated key) so a handful of prepared statements serve every batch size.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from functools import lru_cache

import msgspec

from augury.errors import StoreError
from augury.store.base import StoredPrediction
from augury.store.codec import View, decode_record, to_prediction
from augury.store.sqlite_schema import read_active

log = logging.getLogger(__name__)

#: the most keys one SELECT binds.
CHUNK = 256


@lru_cache(maxsize=4096)
def _select_one(table: str) -> str:
    return f"SELECT v FROM {table} WHERE key = ?"


@lru_cache(maxsize=4096)
def _select_in(table: str, size: int) -> str:
    return f"SELECT key, v FROM {table} WHERE key IN ({','.join('?' * size)})"


@lru_cache(maxsize=4096)
def _checked_one(table: str) -> str:
    """One key and the data version, in one statement (one row even on a miss)."""
    return f"SELECT d.data_version, t.v FROM pragma_data_version AS d LEFT JOIN {table} AS t ON t.key = ?"


@lru_cache(maxsize=4096)
def _checked_in(table: str, size: int) -> str:
    """Up to `size` keys and the data version, in one statement (a row with a NULL key on a miss)."""
    return (f"SELECT d.data_version, t.key, t.v FROM pragma_data_version AS d "
            f"LEFT JOIN {table} AS t ON t.key IN ({','.join('?' * size)})")


def _bucket(n: int) -> int:
    return 1 << (n - 1).bit_length()


class Reader:
    """One reader connection and its cached view of the active version."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con
        self._data_version = -1
        self._active: tuple[str, View] | None = None

    def active(self) -> tuple[str, View] | None:
        """The active version's table and view, re-read only if the database changed since last time."""
        data_version = self.con.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:
            self._active = read_active(self.con)
            self._data_version = data_version
        return self._active

    def forget(self) -> None:
        """Re-read the active version on the next lookup."""
        self._data_version = -1

    def lookup(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """`keys` in the active version, aligned; retried once if the version vanished mid-call."""
        if self._active is not None and self._data_version >= 0 and len(keys) <= CHUNK:
            table, view = self._active
            try:
                data_version, found = self._fetch_checked(table, keys)
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                data_version, found = -1, {}
            if data_version == self._data_version:
                return _predictions(keys, found, view)
            self.forget()  # another connection committed: the pointer may have moved
        return self._lookup_after_check(keys)

    def _fetch_checked(self, table: str, keys: Sequence[str]) -> tuple[int, dict[str, bytes]]:
        """The data version and the rows of `keys` in `table`, from one statement (one snapshot)."""
        con = self.con
        if len(keys) == 1:
            data_version, blob = con.execute(_checked_one(table), (keys[0],)).fetchone()
            return data_version, {} if blob is None else {keys[0]: blob}
        unique = list(dict.fromkeys(keys))
        rows = con.execute(_checked_in(table, _bucket(len(unique))), _padded(unique)).fetchall()
        return rows[0][0], {key: blob for _, key, blob in rows if key is not None}

    def _lookup_after_check(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """`lookup` with the data version checked first (PRAGMA), the active version re-read if needed."""
        for attempt in (1, 2):
            active = self.active()
            if active is None:
                return [None] * len(keys)
            table, view = active
            try:
                found = self._fetch(table, keys)
            except sqlite3.OperationalError as exc:
                if attempt == 2 or "no such table" not in str(exc):
                    raise
                self.forget()
                continue
            return _predictions(keys, found, view)
        raise AssertionError("unreachable")

    def _fetch(self, table: str, keys: Sequence[str]) -> dict[str, bytes]:
        con = self.con
        if len(keys) == 1:
            row = con.execute(_select_one(table), (keys[0],)).fetchone()
            return {} if row is None else {keys[0]: row[0]}
        unique = list(dict.fromkeys(keys))
        if len(unique) <= CHUNK:
            return dict(con.execute(_select_in(table, _bucket(len(unique))), _padded(unique)).fetchall())
        found: dict[str, bytes] = {}
        con.execute("BEGIN")
        try:
            for start in range(0, len(unique), CHUNK):
                chunk = unique[start : start + CHUNK]
                found.update(con.execute(_select_in(table, _bucket(len(chunk))), _padded(chunk)).fetchall())
        finally:
            con.execute("COMMIT")
        return found


def _predictions(keys: Sequence[str], found: dict[str, bytes], view: View) -> list[StoredPrediction | None]:
    """The results of a lookup, aligned with `keys`; TTL applied; a record that fails to decode is a
    StoreError (the file is damaged), never a wrong answer."""
    cutoff = view.cutoff_us(time.time())
    out: list[StoredPrediction | None] = []
    key = ""
    try:
        for key in keys:
            blob = found.get(key)
            out.append(None if blob is None else to_prediction(key, decode_record(blob), view, cutoff))
    except (msgspec.DecodeError, ValueError, IndexError) as exc:
        raise StoreError(
            f"store version {view.store_version} holds a corrupt record for key {key!r}: {exc}"
        ) from exc
    return out


def _padded(keys: list[str]) -> list[str]:
    missing = _bucket(len(keys)) - len(keys)
    return keys + [keys[-1]] * missing if missing else keys


class ReaderPool:
    """At most `size` reader connections, created on demand, lent to one thread at a time."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int, timeout_s: float) -> None:
        self._connect = connect
        self._size = size
        self._timeout_s = timeout_s
        self._free: queue.SimpleQueue[Reader] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all: list[Reader] = []
        self._closed = False

    def acquire(self) -> Reader:
        if self._closed:
            raise StoreError("the prediction store is closed")
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise StoreError("the prediction store is closed")
            if len(self._all) < self._size:
                reader = Reader(self._connect())
                self._all.append(reader)
                return reader
        try:
            return self._free.get(timeout=self._timeout_s)
        except queue.Empty:
            raise StoreError(
                f"all {self._size} reader connections of the prediction store stayed busy for "
                f"{self._timeout_s:g} s (raise max_readers or pool_timeout_s)"
            ) from None

    def discard(self, reader: Reader) -> None:
        """Close a connection that failed mid-use instead of lending it again; a new one replaces it."""
        with self._lock:
            if reader in self._all:
                self._all.remove(reader)
        try:
            reader.con.close()
        except sqlite3.Error as exc:
            log.warning("closing a failed store reader connection: %s", exc)

    def release(self, reader: Reader) -> None:
        if self._closed:
            reader.con.close()
        else:
            self._free.put(reader)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            readers, self._all = self._all, []
        for reader in readers:
            reader.con.close()
