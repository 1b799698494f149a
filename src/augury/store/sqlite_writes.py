"""The SQLite store's writes: versions (publish, activate, rollback, delete, gc) and write-backs.

Every write goes through the one writer connection of `StoreFile`, for one thread at a time
(`_exclusive`); SQLite serialises writers across processes, and a writer waits up to `busy_timeout_s` for
another one to finish. After each write (committed or not) the reader pool's generation is bumped, so
this store's own lookups see it at once (`sqlite_read`).

Publishing registers the version as 'loading' under a publish lease, bulk-loads it, builds its key index
and switches the pointer (`sqlite_publish` has the steps); a failure deletes the partial version before
the error propagates, and a crash leaves an ORPHAN that `gc` deletes. The previous active version is
untouched either way. A publish in parts (`begin_publish`, written by any number of processes through
`join_publish`) is `sqlite_parts`. Activation, rollback, deletion and collection are each one write
transaction that reads the versions, decides (`versions`, shared by every backend) and changes them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pyarrow as pa

from augury.errors import StoreUnavailable
from augury.store import sqlite_parts, sqlite_publish, writeback
from augury.store import versions as vs
from augury.store.base import ORPHAN, VersionInfo, WrittenBack
from augury.store.codec import dump_json, features_hashed, prediction_columns
from augury.store.lease import dead_leases, lease_path, remove_lease
from augury.store.publishing import check_publish_args, iter_batches
from augury.store.sqlite_errors import store_error
from augury.store.sqlite_parts import SQLitePublish
from augury.store.sqlite_publish import rollback as _rollback
from augury.store.sqlite_reads import StoreReads
from augury.store.sqlite_schema import read_versions, table

log = logging.getLogger(__name__)


class StoreWrites(StoreReads):
    """The writes of `SQLiteStore` (see the module docstring), on top of its reads (`sqlite_reads`)."""

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

    @contextmanager
    def _transaction(self, doing: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``), committed when the block ends, rolled back if
        it raises."""
        with self._exclusive(doing) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise

    @contextmanager
    def _writing(self, doing: str) -> Iterator[list[VersionInfo]]:
        """One write transaction, with the versions as they are inside it."""
        with self._transaction(doing) as con:
            yield read_versions(con, self.path)

    # -- versions ------------------------------------------------------------------------------------

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

    def _point(self, number: int) -> None:
        assert self._writer is not None
        self._writer.execute("UPDATE augury_pointer SET active = ? WHERE id = 1", (number,))

    def _drop(self, info: VersionInfo) -> None:
        assert self._writer is not None
        self._writer.execute(f"DROP TABLE IF EXISTS {table(int(info.version))}")
        self._writer.execute("DELETE FROM augury_versions WHERE id = ?", (int(info.version),))
        if info.state == ORPHAN:
            remove_lease(lease_path(self.path, int(info.version)))

    # -- write-back (beside the versions; `store.writeback`) ------------------------------------------

    def write_back(self, rows: Sequence[WrittenBack]) -> None:
        """Keep dynamic predictions beside the versions, each until its `expires_at` (one transaction)."""
        params = writeback.encoded(rows)
        if not params:
            return
        with self._transaction("writing back predictions") as con:
            writeback.write(con, params)

    def prune_written_back(self) -> int:
        """Delete the expired write-backs; how many."""
        with self._transaction("pruning write-backs") as con:
            return writeback.prune(con, time.time())
