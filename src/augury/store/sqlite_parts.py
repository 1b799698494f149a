"""A publish in parts into an SQLite store (`base.Publishing`): begin, write batches from any number of
threads or processes, then commit or abort (issue 13).

`begin` registers the version as 'loading' under its publish lease (`lease`: an ``flock`` the kernel
drops when the process dies, kill -9 included), with its key index already made and its layout left to
the first batch written (``pending``). Another process opens the same file and joins the publish by its
number (`SQLiteStore.join_publish`) to write parts of it; only the handle that began it, which holds the
lease, commits or aborts. So a publish killed midway is known without asking anyone: its lease is free,
its version lists as an orphan, its joined writers' next write fails, and `gc` deletes it (with the lease
file).

Each `write` is one write transaction (SQLite serialises writers across processes; one waits up to
`busy_timeout_s` for another): it checks that the version is still 'loading' and its publish alive,
fixes the layout if it is the first batch (or checks the batch against it), inserts the rows and adds
them to the row count. A key already written, by this writer or another, fails the unique index: the
transaction is rolled back (none of the batch is kept) and the write is an `InputError` naming the key,
after which the publish should be aborted. `commit` marks the version ready and, if asked, switches the
pointer in the same transaction, so readers see the old version or the new one.

Each batch goes in sorted by key, so the key index takes its inserts in order rather than at random:
one writer, random 32-hex-digit keys in 65,536-row batches, on 2 busy cores: 320,000 rows/s sorted
against 145,000 unsorted for 200,000 rows, 215,000 for 1M (the single-stream `publish` of the same 1M:
430,000). A 64 MB page cache for the writer added only 7% at 1M rows, so it keeps SQLite's default.

A single-stream `publish` does not go through here: building the key index after the bulk load is
faster than keeping it while inserting (`sqlite_publish`), and one stream needs neither.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from typing import TYPE_CHECKING

import pyarrow as pa

from augury.errors import InputError, StoreError
from augury.store import versions as vs
from augury.store.base import LOADING
from augury.store.codec import (
    batch_rows,
    dump_json,
    encode_record,
    features_hashed,
    load_json,
    prediction_columns,
)
from augury.store.lease import Lease, lease_path, writer_alive
from augury.store.sqlite_publish import discard, insert
from augury.store.sqlite_schema import layout, table

if TYPE_CHECKING:
    from augury.store.sqlite_writes import StoreWrites

log = logging.getLogger(__name__)

#: writer processes `augury publish` loads a dataset's parts with by default (`publish_pool`): one, so a
#: dataset loads as one stream (`sqlite_publish`: the key index built once at the end). SQLite runs one
#: write transaction at a time and its own work (inserts, the index, the WAL) is ~3/4 of a load (cProfile,
#: 500k rows), so more writers only queue: 1M rows, 494-506k rows/s with one, 262-273k with 2-4
#: (BENCHMARKS.md, "Publishing a dataset", which also measures parts in files of their own, merged).
PUBLISH_WRITERS = 1


class SQLitePublish:
    """One publish in progress (see the module docstring). Use `SQLiteStore.begin_publish` or
    `SQLiteStore.join_publish`."""

    def __init__(self, store: StoreWrites, version: int, model_version: str, lease: Lease | None) -> None:
        self._store = store
        self._number = version
        self.version = str(version)
        self.model_version = model_version
        self._lease = lease  # None: a joined writer, which writes but neither commits nor aborts
        self._lease_path = lease_path(store.path, version)
        self._done = threading.Event()

    def write(self, batch: pa.RecordBatch) -> int:
        """Store one batch's rows in the version (one transaction); how many. InputError for a bad batch
        or a key already in the version (nothing of the batch is kept; abort the publish)."""
        if self._done.is_set():
            raise StoreError(f"store version {self.version}: this publish is already over")
        if not isinstance(batch, pa.RecordBatch):
            raise InputError(f"publish takes Arrow record batches, not {type(batch).__name__}")
        mine = prediction_columns(batch.schema), features_hashed(batch.schema)
        name = table(self._number)
        with self._store._exclusive("publishing a part") as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                columns, hashed = self._layout(con, mine)
                rows = batch_rows(batch, columns, self.model_version, hashed)
                if len(set(rows.keys)) != len(rows.keys):
                    key, _ = Counter(rows.keys).most_common(1)[0]
                    raise InputError(f"key '{key}' appears more than once in the published rows")
                blobs = list(map(encode_record, rows.records()))
                order = sorted(range(len(blobs)), key=rows.keys.__getitem__)
                try:
                    n = insert(con, name, [rows.keys[i] for i in order], [blobs[i] for i in order])
                except sqlite3.IntegrityError:
                    con.execute("ROLLBACK")
                    raise InputError(f"key '{_clash(con, name, rows.keys)}' appears more than once in "
                                     "the published rows") from None
                con.execute("UPDATE augury_versions SET row_count = row_count + ? WHERE id = ?",
                            (n, self._number))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
        return n

    def _layout(self, con: sqlite3.Connection,
                mine: tuple[tuple[str, ...], bool]) -> tuple[tuple[str, ...], bool]:
        """The version's prediction columns and whether it keeps features hashes, fixed by the first batch
        any writer wrote (`mine` if this is it); StoreError if the publish is over or its process died."""
        row = con.execute("SELECT state, columns FROM augury_versions WHERE id = ?",
                          (self._number,)).fetchone()
        if row is None or row[0] != LOADING:
            raise StoreError(f"store version {self.version}: this publish is over "
                             f"({'deleted as an orphan, or aborted' if row is None else row[0]})")
        if self._lease is None and not writer_alive(self._lease_path):
            raise StoreError(f"store version {self.version}: the process that began this publish is gone "
                             "(the version is an orphan; gc deletes it)")
        shape = load_json(row[1])
        if not shape.get("pending"):
            return tuple(shape["columns"]), bool(shape.get("features_hash"))
        con.execute("UPDATE augury_versions SET columns = ? WHERE id = ?",
                    (dump_json(layout(*mine), "columns"), self._number))
        return mine

    def commit(self, activate: bool = True) -> str:
        """Mark the version ready and, if `activate`, make it the active one: one transaction. StoreError
        if it was deleted meanwhile (nothing is switched then)."""
        lease = self._owner("commit")
        with self._store._exclusive("committing a publish") as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT state, columns FROM augury_versions WHERE id = ?",
                                  (self._number,)).fetchone()
                if row is None or row[0] != LOADING:
                    self._done.set()  # nothing to commit or abort any more
                    lease.release()
                    raise StoreError(f"store version {self.version} is no longer being published "
                                     f"({'deleted' if row is None else row[0]})")
                shape = load_json(row[1])
                shape.pop("pending", None)
                con.execute("UPDATE augury_versions SET state = 'ready', columns = ? WHERE id = ?",
                            (dump_json(shape, "columns"), self._number))
                if activate:
                    con.execute("UPDATE augury_pointer SET active = ? WHERE id = 1", (self._number,))
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise  # (a failure that may pass, a locked file: commit or abort again)
        self._done.set()
        lease.release()
        return self.version

    def abort(self) -> None:
        """Delete the partial version; if even that fails, it is left as an orphan for `gc`."""
        lease = self._owner("abort")
        self._done.set()
        try:
            with self._store._exclusive("aborting a publish") as con:
                try:
                    discard(con, self._number)
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
        except StoreError as exc:
            log.warning("could not delete partial store version %s of %s (gc will): %s", self.version,
                        self._store.path, exc)
        finally:
            lease.release()

    def _owner(self, doing: str) -> Lease:
        if self._lease is None:
            raise StoreError(f"store version {self.version}: only the handle that began a publish may "
                             f"{doing} it")
        if self._done.is_set():
            raise StoreError(f"store version {self.version}: this publish is already over")
        return self._lease


def _clash(con: sqlite3.Connection, name: str, keys: list[str]) -> str:
    """A key of `keys` already in table `name` (the batch's own keys are unique)."""
    for start in range(0, len(keys), 256):
        chunk = keys[start:start + 256]
        row = con.execute(f"SELECT key FROM {name} WHERE key IN ({','.join('?' * len(chunk))}) LIMIT 1",
                          chunk).fetchone()
        if row is not None:
            return str(row[0])
    return "?"


def join(store: StoreWrites, version: str) -> SQLitePublish:
    """A writer of the publish of `version`, begun elsewhere: VersionNotFoundError if there is no such
    version, StoreError if it is not being published by a live process."""
    info = vs.find(store.versions(), version)
    if info.state != LOADING:
        raise StoreError(f"store version {version} is {info.state}, not being published")
    return SQLitePublish(store, int(info.version), info.model_version, None)
