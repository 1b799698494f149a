"""The SQLite prediction store: the embedded default, one file, any number of reading processes.

Publishing (one writer at a time; SQLite serialises writers across processes, and a writer waits up to
`busy_timeout_s` for another one to finish) registers the version as 'loading' under a publish lease,
bulk-loads it, builds its key index and switches the pointer (`sqlite_publish` has the steps); a failure
deletes the partial version before the error propagates, and a crash leaves an ORPHAN that `gc` deletes.
The previous active version is untouched either way. A publish in parts (`begin_publish`, written by any
number of processes through `join_publish`) is `sqlite_parts`.

Reads go through `sqlite_read`, which keeps each reader's read snapshot open for up to `snapshot_s`
(a switch made by another process is seen that late; one made through this object at once, because every
write here bumps the reader pool's generation after it commits). Version listings end the snapshot first,
so they always show the latest committed state. sqlite3 errors become `StoreError` at every public method.

The file is watched (`sqlite_watch`): once a second, off the lookups, the reader janitor stats it; a
file replaced (``mv``, ``rm`` and a new publish) or rewritten in place (``cp``) is reopened, and while
there is no store at the path every call is a `StoreError` (a server's readiness says so) until one
is there again, found by a thread that looks once a second.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pyarrow as pa

from augury.errors import ConfigError, StoreError, StoreUnavailable
from augury.store import sqlite_parts, sqlite_publish, writeback
from augury.store import versions as vs
from augury.store.base import ORPHAN, StoredPrediction, VersionInfo, WrittenBack
from augury.store.codec import View, dump_json, features_hashed, prediction_columns
from augury.store.lease import dead_leases, lease_path, remove_lease
from augury.store.publishing import check_publish_args, iter_batches
from augury.store.sqlite_errors import store_error
from augury.store.sqlite_file import StoreFile
from augury.store.sqlite_parts import SQLitePublish
from augury.store.sqlite_publish import rollback as _rollback
from augury.store.sqlite_schema import connect, read_versions, table

log = logging.getLogger(__name__)

#: how much of the file readers memory-map: nothing. A mapped file that another process truncates or
#: rewrites in place (``cp other.db live.db``) makes the next read of a mapped page past its new end a
#: SIGBUS, which kills the server (issue 11; measured: exit 135 inside a read snapshot), and Python
#: cannot catch it safely. Unmapped, the same read is an error (``database disk image is malformed``),
#: a 503. Mapping was faster in isolation (a one-key `get_many` 4.2 µs p50 mapped against 5.6 unmapped,
#: benchmarks/store_bench.py); through the server see BENCHMARKS.md ("Store file watch").
READER_MMAP_BYTES = 0
#: each reader's page cache, in KiB (SQLite's default is 2,000). Unmapped, a page a reader has not cached
#: is a ``pread``: with the default cache a one-key lookup in the benchmark's 8 MB store cost 3.75 µs, with
#: 16 MiB 2.8 µs, within 0.1 µs of the mapped file's 2.7 (SELECT in a read transaction, random keys), and a
#: static request through the server ~2 µs less CPU (benchmarks/inproc_bench.py static). SQLite fills it
#: only as pages are read, so a small store costs its size; a large one at most this much per reader
#: (`max_readers`, 8 by default; the server's event loop uses one for its lookups).
READER_CACHE_KIB = 16384

#: how long a reader keeps one read snapshot (see `sqlite_read`): the most a switch made by another
#: process can go unseen, against the cost of a read transaction per lookup (3 syscalls: 2.5 µs of a 6.7 µs
#: lookup in process, 6 of 12 µs in a busy server), which snapshots pay once per period per reader.
DEFAULT_SNAPSHOT_S = 0.05
#: records kept in memory, per store object (`recordcache`; used inside read snapshots).
DEFAULT_CACHE_ENTRIES = 65_536


class SQLiteStore(StoreFile):
    """A versioned key -> prediction store in one SQLite file (see the module docstring).

    `create`: a missing (or empty) file becomes a new store; False makes it a `StoreError` ("no store at
    PATH"), for everything that only reads or changes an existing store. Reader connections never create.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        url: str | None = None,
        max_readers: int = 8,
        busy_timeout_s: float = 30.0,
        pool_timeout_s: float = 10.0,
        snapshot_s: float = DEFAULT_SNAPSHOT_S,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
        create: bool = True,
    ) -> None:
        if isinstance(snapshot_s, bool) or not (math.isfinite(snapshot_s) and snapshot_s >= 0):
            raise ConfigError(f"snapshot_s must be a number of seconds >= 0 (0 turns snapshots off), "
                              f"not {snapshot_s!r}")
        if isinstance(cache_entries, bool) or not isinstance(cache_entries, int) or cache_entries < 0:
            raise ConfigError(f"cache_entries must be a whole number >= 0 (0 turns the record cache off), "
                              f"not {cache_entries!r}")
        self.url = url or f"sqlite:///{os.path.abspath(os.fspath(path))}"
        pool_args = (max_readers, pool_timeout_s, float(snapshot_s), cache_entries)
        super().__init__(path, busy_timeout_s, pool_args, create)

    def _connect_reader(self) -> sqlite3.Connection:
        con = connect(self.path, self._busy_timeout_s, readonly=True)
        try:
            con.execute("PRAGMA query_only=ON")
            con.execute(f"PRAGMA mmap_size={READER_MMAP_BYTES}")
            con.execute(f"PRAGMA cache_size=-{READER_CACHE_KIB}")
        except sqlite3.Error as exc:
            con.close()
            raise store_error(exc, f"cannot open a reader on the prediction store {self.path}: {exc}"
                              ) from exc
        return con

    @contextmanager
    def _exclusive(self, doing: str) -> Iterator[sqlite3.Connection]:
        """The writer connection, for one thread at a time (waiting at most `busy_timeout_s`, as a
        writer in another process would), with sqlite3 errors translated. A write reads the WAL index
        (``-shm``), and a cut one is SIGBUS: one cut under the store is first reopened (`watch`)."""
        if self._down is None and self._shm_cut():
            self.watch()
        if not self._write_lock.acquire(timeout=self._busy_timeout_s):
            raise StoreUnavailable(
                f"prediction store {self.path}: {doing} waited {self._busy_timeout_s:g} s for "
                "another write in this process to finish"
            )
        try:
            if self._writer is None:
                raise self._down_kind(f"prediction store {self.path}: {doing} failed: {self._down}")
            with self._errors(doing):
                yield self._writer
        finally:
            self._pool.wrote()  # after the commit: this store's readers renew their snapshots first
            self._write_lock.release()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._failure(store_error(exc, f"prediction store {self.path}: {doing} failed: {exc}")
                                ) from exc

    # -- reads ---------------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """Look up `keys` in the active version; results aligned with `keys`, `None` for a miss."""
        if not keys:
            return []
        pool = self._pool
        reader = pool.acquire()
        try:
            found = reader.lookup(keys, pool.generation)
        except sqlite3.Error as exc:
            pool.discard(reader)
            raise self._failure(store_error(exc, f"prediction store {self.path}: lookup failed: {exc}")
                                ) from exc
        except StoreError as exc:  # a corrupt record (`sqlite_read`)
            pool.discard(reader)
            raise self._failure(exc) from exc.__cause__
        except BaseException:
            pool.discard(reader)  # it may be inside a read transaction: never lend it again
            raise
        pool.release(reader)
        return found

    @property
    def snapshot_s(self) -> float:
        """How long a reader keeps one read snapshot: the most a switch made elsewhere can go unseen."""
        return self._pool_args[2]

    def reads_stamp(self) -> tuple[object, int]:
        """A value that changes whenever lookups may have moved to another version (a write or a switch
        through this object, a reopened file); not when another process switches, which `lookup_view`
        sees within `snapshot_s`. An attribute read: for a caller that keeps what lookups answered
        (`serve.lookup_memo`) and checks it on every request."""
        pool = self._pool
        return pool, pool.generation

    def lookup_view(self) -> View | None:
        """The active version that a lookup made now answers from, as a lookup sees it (through a reader's
        snapshot, renewed if due; so no older than `snapshot_s`); None before the first activation."""
        pool = self._pool
        reader = pool.acquire()
        try:
            found = reader.lookup_view(pool.generation)
        except sqlite3.Error as exc:
            pool.discard(reader)
            raise self._failure(store_error(exc, f"prediction store {self.path}: lookup failed: {exc}")
                                ) from exc
        except BaseException:
            pool.discard(reader)
            raise
        pool.release(reader)
        return None if found is None else found[1]

    @contextmanager
    def _latest(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A reader connection outside any snapshot, so it reads the latest committed state."""
        pool = self._pool
        reader = pool.acquire()
        try:
            with self._errors(doing):
                reader.end_snapshot()
                yield reader.con
        except BaseException:
            pool.discard(reader)
            raise
        pool.release(reader)

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first; a 'loading' version whose publish died shows as ORPHAN."""
        with self._latest("listing versions") as con:
            return read_versions(con, self.path)

    def active(self) -> VersionInfo | None:
        """The active version, or None before the first activation."""
        with self._latest("reading the active version") as con:
            found = read_versions(con, self.path, active_only=True)
        return found[0] if found else None

    # -- writes --------------------------------------------------------------------------------------

    def publish(
        self,
        batches: Iterable[pa.RecordBatch],
        *,
        model_version: str,
        ttl_s: float | None = None,
        profile: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        activate: bool = True,
    ) -> VersionInfo:
        """Write a new version from `batches`, mark it ready, and activate it unless `activate` is False."""
        check_publish_args(model_version, ttl_s)
        profile_json, meta_json = dump_json(profile, "profile"), dump_json(meta, "meta")
        it = iter_batches(batches)
        first = next(it, None)
        columns = prediction_columns(first.schema) if first is not None else ()
        hashed = first is not None and features_hashed(first.schema)
        with self._exclusive("publishing") as con:
            number, lease = sqlite_publish.register(con, self.path, model_version, columns, ttl_s,
                                                    profile_json, meta_json, hashed)
            try:
                sqlite_publish.load(con, number, first, it, columns, model_version, activate, hashed)
            except BaseException:
                _rollback(con)
                self._discard(number)
                raise
            finally:
                lease.release()
            return vs.find(read_versions(con, self.path), str(number))

    def begin_publish(self, *, model_version: str, ttl_s: float | None = None,
                      profile: dict[str, Any] | None = None,
                      meta: dict[str, Any] | None = None) -> SQLitePublish:
        """Register a new 'loading' version under a publish lease and return the handle that writes,
        commits or aborts it (`sqlite_parts`); other processes join it with `join_publish`."""
        check_publish_args(model_version, ttl_s)
        profile_json, meta_json = dump_json(profile, "profile"), dump_json(meta, "meta")
        with self._exclusive("beginning a publish") as con:
            number, lease = sqlite_publish.register(con, self.path, model_version, (), ttl_s, profile_json,
                                                    meta_json, parts=True)
        return SQLitePublish(self, number, model_version, lease)

    def join_publish(self, version: str) -> SQLitePublish:
        """A handle that writes parts of a publish begun elsewhere, by this process or another (it cannot
        commit or abort): VersionNotFoundError for an unknown version, StoreError for one that is not
        being published by a live process."""
        return sqlite_parts.join(self, version)

    #: writer processes of `augury publish` from a dataset (`base.SharedPublishing`; measured there)
    publish_writers = sqlite_parts.PUBLISH_WRITERS

    def reopen_args(self) -> tuple[str, dict[str, Any]]:
        """The URL and options that open this same file in a writer process (`publish_pool`)."""
        return f"sqlite:///{self.path}", {"busy_timeout_s": self._busy_timeout_s}

    def _discard(self, number: int) -> None:
        """Delete a failed publish's partial version; if even that fails, gc will (it is an orphan)."""
        assert self._writer is not None  # (inside `_exclusive`)
        try:
            sqlite_publish.discard(self._writer, number)
        except sqlite3.Error as exc:
            log.warning(
                "could not delete partial store version %s of %s (gc will): %s", number, self.path, exc
            )
            _rollback(self._writer)

    @contextmanager
    def _writing(self, doing: str) -> Iterator[list[VersionInfo]]:
        """One write transaction, with the versions as they are inside it."""
        with self._exclusive(doing) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield read_versions(con, self.path)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

    def activate(self, version: str) -> VersionInfo:
        """Make a ready version the active one: one UPDATE of the pointer."""
        with self._writing("activating") as infos:
            info = vs.find(infos, version)
            vs.check_activatable(info)
            self._point(int(info.version))
        return replace(info, active=True)

    def rollback(self, to: str | None = None) -> VersionInfo:
        """Activate `to`, or the newest ready version older than the active one."""
        with self._writing("rolling back") as infos:
            target = vs.rollback_target(infos, to)
            self._point(int(target.version))
        return replace(target, active=True)

    def delete(self, version: str) -> None:
        """Delete a version that is neither active nor being written by a live publish."""
        with self._writing("deleting") as infos:
            info = vs.find(infos, version)
            vs.check_deletable(info)
            self._drop(info)

    def gc(self, keep: int = 2) -> list[str]:
        """Delete orphans and all but the newest `keep` ready versions (never the active one), the
        expired write-backs and the dead publish leases (`remove_dead_leases`); returns the deleted
        versions."""
        with self._writing("collecting") as infos:
            victims = vs.gc_victims(infos, keep)
            for victim in victims:
                self._drop(vs.find(infos, victim))
        self.prune_written_back()
        self.remove_dead_leases()
        return victims

    def remove_dead_leases(self) -> int:
        """Delete the lease files that no live publish holds (`lease.dead_leases`: an orphan's, or one a
        publish killed after it activated left beside a ready version); returns how many. Inside a write
        transaction, so that no publish is taking a lease meanwhile."""
        with self._writing("removing dead publish leases"):
            return sum(remove_lease(path) for path in dead_leases(self.path))

    # -- write-back (beside the versions; `store.writeback`) ------------------------------------------------

    def write_back(self, rows: Sequence[WrittenBack]) -> None:
        """Keep dynamic predictions beside the versions, each until its `expires_at` (one transaction)."""
        params = writeback.encoded(rows)
        if not params:
            return
        with self._exclusive("writing back predictions") as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                writeback.write(con, params)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

    def written_back(self, keys: Sequence[str], model_version: str) -> list[WrittenBack | None]:
        """The unexpired write-backs of `keys` made by `model_version`, aligned with `keys`. Read in a
        reader's snapshot: another process's write-backs show within `snapshot_s`, this store's at once."""
        if not keys:
            return []
        pool = self._pool
        reader = pool.acquire()
        try:
            found: list[WrittenBack | None] = reader.read(
                lambda con: writeback.read(con, keys, model_version, time.time()), pool.generation)
        except sqlite3.Error as exc:
            pool.discard(reader)
            raise self._failure(store_error(
                exc, f"prediction store {self.path}: reading write-backs failed: {exc}")) from exc
        except BaseException:
            pool.discard(reader)
            raise
        pool.release(reader)
        return found

    def prune_written_back(self) -> int:
        """Delete the expired write-backs; how many."""
        with self._exclusive("pruning write-backs") as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                pruned = writeback.prune(con, time.time())
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        return pruned

    def _point(self, number: int) -> None:
        assert self._writer is not None
        self._writer.execute("UPDATE augury_pointer SET active = ? WHERE id = 1", (number,))

    def _drop(self, info: VersionInfo) -> None:
        assert self._writer is not None
        self._writer.execute(f"DROP TABLE IF EXISTS {table(int(info.version))}")
        self._writer.execute("DELETE FROM augury_versions WHERE id = ?", (int(info.version),))
        if info.state == ORPHAN:
            remove_lease(lease_path(self.path, int(info.version)))
