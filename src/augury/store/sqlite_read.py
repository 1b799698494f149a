"""The SQLite store's read path: a reader connection's read snapshots and chunked lookups.

Thread-safety: `get_many` may be called from any number of threads. Each call borrows one reader
connection from a pool of at most `max_readers` (created on demand; WAL lets them all read at once) and
gives it back; a caller that finds all of them busy waits up to `pool_timeout_s`, then gets a StoreError.

**Read snapshots** (``snapshot_s`` > 0, the default 0.05 s). SQLite wraps each statement outside a
transaction in an implicit read transaction, and starting one is most of a one-key lookup's cost: the
WAL shared-memory read lock is taken and released (two ``fcntl``) and, when the file was memory-mapped
(no longer: `sqlite.READER_MMAP_BYTES`), its size checked (``fstat``). Measured inside the HTTP server
under load, that made a lookup 12 µs instead of 6. So a reader keeps one read transaction (a snapshot)
open across lookups: ``BEGIN``, then plain
``SELECT v FROM <table> WHERE key = ?`` statements against the active version's table as read when the
snapshot began. Inside one snapshot the pointer and the tables cannot change, and versions are
immutable (DESIGN.md, invariant 5), so every answer comes from one version, even across chunks.

A snapshot lives at most `snapshot_s` (monotonic clock): the first lookup after that ends it and begins
a new one, re-reading the active version only if ``PRAGMA data_version`` says another connection
committed. The price is staleness: a switch made by *another* connection or process (``augury store
activate``) is seen up to `snapshot_s` late. A write made through the same `SQLiteStore` object is seen
at once: it bumps the pool's `generation` after committing, and a reader whose snapshot began before
that begins a new one first. The readers of one pool never go back a version either: a reader whose new
snapshot shows another active version than its last one bumps the `generation` too, so every other
reader renews before its next lookup (without that, a server with two readers, one renewed and one not
yet, answered one client from version 2 and then from version 1). ``snapshot_s = 0``
turns snapshots off: each lookup is one statement that checks the data version itself (the behaviour
before snapshots, always fresh; see `Reader.fresh_lookup`).

The pool of readers, and the janitor thread that ends idle snapshots, are in `sqlite_pool`.

Without snapshots, each reader caches the active version's table and view and checks ``PRAGMA
data_version`` in the same statement as the rows (joined with the ``pragma_data_version`` table); if
the version moved, the answer is thrown away and the lookup done again against the re-read version; a
lookup of more than one chunk runs in one read transaction; a table dropped between the pointer check
and the read is noticed and the lookup retried once.

Lookups never bind more than `CHUNK` keys per statement; statement sizes are rounded up to a power of two
(padding with a repeated key) so a handful of prepared statements serve every batch size.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import msgspec

from augury.errors import StoreBroken
from augury.store.base import StoredPrediction
from augury.store.codec import View, decode_record, to_prediction
from augury.store.recordcache import ABSENT, RecordCache
from augury.store.sqlite_schema import read_active

log = logging.getLogger(__name__)

#: lookups of up to this many keys go through the record cache; larger ones (bulk reads, which are
#: rarely all hot and for which the cache's bookkeeping cost more than it saved: 100 random keys of 1M
#: took 566 µs through it, 423 µs without) read SQLite directly.
CACHED_LOOKUP_KEYS = 8
#: the most keys one SELECT binds.
CHUNK = 256

#: `Reader.since` of a reader without a snapshot: its age is infinite, so the next lookup begins one.
NO_SNAPSHOT = -math.inf


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
    """One reader connection, its cached view of the active version and, with snapshots, its open read
    transaction. Used by one thread at a time (whoever borrowed it from the pool, or the janitor)."""

    def __init__(self, con: sqlite3.Connection, snapshot_s: float, on_snapshot: Callable[[], None],
                 cache: RecordCache, on_switch: Callable[[int], int],
                 check_file: Callable[[], None] = lambda: None) -> None:
        self.con = con
        #: called before each snapshot begins, before SQLite reads anything: raises a StoreError if the
        #: file or its WAL index changed under the store (`sqlite_watch`; a cut WAL index is SIGBUS at
        #: the next read of it, and ``BEGIN`` reads it)
        self._check_file = check_file
        self._cache = cache
        self._snapshot_s = snapshot_s
        self._on_snapshot = on_snapshot
        #: called when a new snapshot shows another active version than this reader's last one, with the
        #: generation the snapshot began under; returns the generation the reader is at now.
        self._on_switch = on_switch
        self._data_version = -1
        self._active: tuple[str, View] | None = None
        #: when the open snapshot began (time.monotonic()), or NO_SNAPSHOT.
        self.since = NO_SNAPSHOT
        self._generation = -1
        #: the one-key SELECT of the active version's table (set with `_active` in a snapshot).
        self._one_sql = ""

    def lookup(self, keys: Sequence[str], generation: int) -> list[StoredPrediction | None]:
        """`keys` in the active version, aligned. `generation` is the pool's, read before this call: a
        snapshot that began before it was bumped is renewed first (read-your-writes)."""
        if self._snapshot_s <= 0.0:
            return self.fresh_lookup(keys)
        if generation != self._generation or time.monotonic() - self.since >= self._snapshot_s:
            self._renew(generation)
        if self._active is None:
            return [None] * len(keys)
        if len(keys) == 1:  # a server's lookup by key
            return [self._one(keys[0])]
        table, view = self._active
        cache = self._cache
        if not cache.entries or len(keys) > CACHED_LOOKUP_KEYS:
            return _predictions(keys, self._select(table, keys), view)
        remembered = cache.get_many(table, keys)
        missing = [key for key, blob in zip(keys, remembered, strict=True) if blob is None]
        if missing:
            blobs = self._select(table, missing)
            for key, blob in blobs.items():
                _decode(key, blob, view)  # a damaged record is an error every time, never remembered
            read = {key: blobs.get(key, ABSENT) for key in missing}
            cache.put_many(table, list(read.items()))
            remembered = [read[key] if blob is None else blob
                          for key, blob in zip(keys, remembered, strict=True)]
        cutoff = view.cutoff_us(time.time())
        return [None if blob is ABSENT else to_prediction(key, _decode(key, blob, view), view, cutoff)
                for key, blob in zip(keys, remembered, strict=True)]

    def lookup_view(self, generation: int) -> tuple[str, View] | None:
        """The active version's table and view as of now, through a snapshot renewed for it (one begun
        earlier may be up to `snapshot_s` old): what a caller that keeps lookups' answers checks them
        against, every `snapshot_s`, so it sees a switch no later than lookups do."""
        if self._snapshot_s <= 0.0:
            return self.active()
        self._renew(generation)
        return self._active

    def read(self, fn: Callable[[sqlite3.Connection], Any], generation: int) -> Any:
        """`fn(connection)`, inside this reader's snapshot as `lookup` would use it (begun or renewed
        first), or outside any without snapshots: for reads other than the active version's rows."""
        if self._snapshot_s > 0.0 and (generation != self._generation
                                       or time.monotonic() - self.since >= self._snapshot_s):
            self._renew(generation)
        return fn(self.con)

    def _one(self, key: str) -> StoredPrediction | None:
        """`lookup` of one key (the steps of the general case, without its lists): in the record cache,
        else in the snapshot's version, then remembered."""
        assert self._active is not None
        table, view = self._active
        cache = self._cache
        blob = cache.get(table, key) if cache.entries else None
        if blob is None:
            row = self.con.execute(self._one_sql, (key,)).fetchone()
            if row is None:
                if cache.entries:
                    cache.put(table, key, ABSENT)
                return None
            record = _decode(key, row[0], view)  # a damaged record is an error every time, never remembered
            if cache.entries:
                cache.put(table, key, row[0])
        elif blob is ABSENT:
            return None
        else:
            record = _decode(key, blob, view)
        return to_prediction(key, record, view, None if view.ttl_s is None else view.cutoff_us(time.time()))

    def _renew(self, generation: int) -> None:
        """End the snapshot (if any) and begin a new one; re-read the active version if it may have moved."""
        self._check_file()
        self.close_snapshot()
        con = self.con
        self._generation = generation  # before the snapshot begins: a write after this renews it again
        con.execute("BEGIN")
        self.since = time.monotonic()
        data_version = con.execute("PRAGMA data_version").fetchone()[0]  # the snapshot begins here
        if data_version != self._data_version:
            before = self._active[0] if self._active is not None else None
            self._active = read_active(con)
            self._data_version = data_version
            if self._active is not None:
                self._one_sql = _select_one(self._active[0])
                self._cache.follow(self._active[0])
            if (self._active[0] if self._active is not None else None) != before:
                # the other readers renew too: none answers from the older version after this one
                self._generation = self._on_switch(generation)
        self._on_snapshot()

    def end_snapshot(self) -> None:
        """End the open snapshot, if any, before a read outside any snapshot (`StoreReads._latest`):
        the file is checked first, as before a snapshot begins (that read reads the WAL index too)."""
        self._check_file()
        self.close_snapshot()

    def close_snapshot(self) -> None:
        """End the open snapshot, if any (the next lookup begins a new one; the janitor's call)."""
        if self.since != NO_SNAPSHOT:
            self.con.execute("COMMIT")
            self.since = NO_SNAPSHOT

    def _select(self, table: str, keys: Sequence[str]) -> dict[str, bytes]:
        """The rows of `keys` in `table`, a chunk of keys per statement, in the current transaction."""
        con = self.con
        if len(keys) == 1:
            row = con.execute(_select_one(table), (keys[0],)).fetchone()
            return {} if row is None else {keys[0]: row[0]}
        unique = list(dict.fromkeys(keys))
        if len(unique) <= CHUNK:
            return dict(con.execute(_select_in(table, _bucket(len(unique))), _padded(unique)).fetchall())
        found: dict[str, bytes] = {}
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start : start + CHUNK]
            found.update(con.execute(_select_in(table, _bucket(len(chunk))), _padded(chunk)).fetchall())
        return found

    # -- without snapshots (snapshot_s = 0): each lookup checks the data version itself -------------------

    def forget(self) -> None:
        """Re-read the active version on the next lookup."""
        self._data_version = -1

    def active(self) -> tuple[str, View] | None:
        """The active version's table and view, re-read only if the database changed since last time."""
        data_version = self.con.execute("PRAGMA data_version").fetchone()[0]
        if data_version != self._data_version:
            self._active = read_active(self.con)
            self._data_version = data_version
        return self._active

    def fresh_lookup(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """`keys` in the active version as of now, outside any snapshot; retried once if the version
        vanished mid-call."""
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
        """`fresh_lookup` with the data version checked first (PRAGMA), the active version re-read if
        needed."""
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
        """`_select`, in one read transaction when it takes more than one statement."""
        if len(keys) <= CHUNK:
            return self._select(table, keys)
        self.con.execute("BEGIN")
        try:
            return self._select(table, keys)
        finally:
            self.con.execute("COMMIT")


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
        raise _corrupt(key, view, exc) from exc
    return out


def _decode(key: str, blob: bytes, view: View) -> Any:
    """A stored record, checked to be one `to_prediction` can read (StoreError if the file is damaged)."""
    try:
        record = decode_record(blob)
    except msgspec.DecodeError as exc:
        raise _corrupt(key, view, exc) from exc
    if not isinstance(record, list) or len(record) != view.fields:
        raise _corrupt(key, view, ValueError(f"expected {view.fields} fields"))
    return record


def _corrupt(key: str, view: View, exc: Exception) -> StoreBroken:
    return StoreBroken(f"store version {view.store_version} holds a corrupt record for key {key!r}: {exc}")


def _padded(keys: list[str]) -> list[str]:
    missing = _bucket(len(keys)) - len(keys)
    return keys + [keys[-1]] * missing if missing else keys
