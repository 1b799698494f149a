"""The SQLite store's hold on its file: the writer connection, the reader pool, checkpoints, and what
happens when the file changes under the store (`sqlite_watch` says how that is noticed and why the old
file is let go of in that order).

`StoreFile` is the base of `SQLiteStore`, which adds the store's reads and writes. Its `_pool` and
`_writer` are replaced together, under the write lock, when the file is reopened; a lookup reads
`_pool` once and uses that pool throughout, so a reopen costs a lookup nothing. While no store can be
read at the path (`_down`), the pool is closed with the reason, which every call then raises as a
`StoreError`, and a thread looks for a store there once every `WATCH_S`.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time

from augury.errors import StoreBroken, StoreError, StoreUnavailable
from augury.store.sqlite_errors import store_error
from augury.store.sqlite_pool import ReaderPool
from augury.store.sqlite_schema import connect, prepare, read_active
from augury.store.sqlite_watch import (
    WATCH_S,
    FileId,
    Shm,
    Stamps,
    continues,
    file_id,
    remove_sidecars,
    shm_of,
    shm_shrank,
    sidecars,
    stamps_of,
)

log = logging.getLogger(__name__)

#: how long a reopen waits for lookups still running on the old file's readers.
REOPEN_WAIT_S = 1.0


class StoreFile:
    """The connections to one store file, kept to the file that is at `path` (see the module docstring).
    `_connect_reader` (a new read-only reader connection) is the subclass's."""

    def __init__(self, path: str | os.PathLike[str], busy_timeout_s: float,
                 pool_args: tuple[int, float, float, int], create: bool) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._busy_timeout_s = busy_timeout_s
        #: max_readers, pool_timeout_s, snapshot_s, cache_entries: each reader pool's
        self._pool_args = pool_args
        self._write_lock = threading.Lock()
        self._checkpointed: tuple[int, int] | None = None  # see _checkpoint
        self._checkpoint_failing = False
        #: why the store cannot answer (no store at the path: `_go_down`), None while it can, and the
        #: kind of StoreError every call raises meanwhile (no file: unavailable; not a store: broken).
        self._down: str | None = None
        self._down_kind: type[StoreError] = StoreUnavailable
        self._closed = threading.Event()
        self._recovery: threading.Thread | None = None
        self._watched_at = -math.inf
        self._check_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        #: a read-only connection that is never lent: while it is open, closing the writer can neither
        #: checkpoint into the file nor delete its WAL (see `_let_go`, `sqlite_watch`)
        self._anchor: sqlite3.Connection | None = None
        self._file: FileId | None = None
        self._stamps = Stamps(None, {})
        self._sidecars: dict[str, tuple[int, int]] = {}
        #: the WAL index (``-shm``) as last seen; SQLite has it mapped in every connection (`_shm_cut`)
        self._shm: Shm | None = None
        self._pool = self._open(create)

    def _connect_reader(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _open(self, create: bool = False, *, require_active: bool = False) -> ReaderPool:
        """Open the file at `path`: the writer, the anchor, the file's identity (`sqlite_watch`), a new
        reader pool. The identity is taken before connecting: a file replaced meanwhile is then noticed
        and reopened. `require_active` (a reopen): a store without an active version yet (a publish still
        writing its first version) is a StoreError, so the server stays down instead of answering that
        no key was ever published."""
        before = file_id(self.path)
        writer = connect(self.path, self._busy_timeout_s, create=create)
        anchor: sqlite3.Connection | None = None
        try:
            prepare(writer, self.path, create=create)
            anchor = connect(self.path, self._busy_timeout_s, readonly=True)
            anchor.execute("SELECT count(*) FROM augury_store").fetchone()  # now it holds the file
            stamps = stamps_of(writer)
            if require_active and read_active(writer) is None:
                raise StoreUnavailable(f"the prediction store {self.path} has no active version yet")
        except BaseException as exc:
            writer.close()  # (with the anchor open, it neither checkpoints nor deletes another's WAL)
            if anchor is not None:
                anchor.close()
            if isinstance(exc, sqlite3.Error):
                raise store_error(exc, f"cannot open the prediction store {self.path}: {exc}") from exc
            raise
        self._stamps, self._file, self._sidecars = stamps, before or file_id(self.path), sidecars(self.path)
        self._shm = shm_of(self.path)  # (the anchor's read made it: it is mapped now)
        self._writer, self._anchor, self._checkpointed = writer, anchor, None
        max_readers, pool_timeout_s, snapshot_s, cache_entries = self._pool_args
        return ReaderPool(self._connect_reader, max_readers, pool_timeout_s, snapshot_s=snapshot_s,
                          checkpoint=self._tick, cache_entries=cache_entries, check_file=self._check_file)

    def _checkpoint(self) -> None:
        """Copy the WAL into the database file if anything was committed since the last complete copy.

        The reader pool's janitor calls this every `snapshot_s` while snapshots are held: a commit's own
        checkpoint stops at the oldest snapshot, so without this a publish's pages would stay in the WAL
        (slower lookups, a WAL that cannot restart). Passive: it never waits for a reader or writer; it
        is skipped while a write of this store runs and retried on the next call until complete."""
        if not self._write_lock.acquire(blocking=False):
            return
        try:
            con = self._writer
            if con is None:
                return
            if self._shm_cut():  # reading it now would be SIGBUS: `watch` reopens the file first
                self._watched_at = -math.inf
                return
            mark = (con.execute("PRAGMA data_version").fetchone()[0], self._pool.generation)
            if mark != self._checkpointed:
                ours = file_id(self.path) == self._file  # nothing else wrote the file since it was seen
                busy, frames, copied = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if ours:
                    self._file = file_id(self.path)  # this write is SQLite's (`_check_file`)
                if not busy and frames == copied:
                    self._checkpointed = mark
            self._checkpoint_failing = False
        except sqlite3.Error as exc:
            if not self._checkpoint_failing:
                log.warning("checkpointing the prediction store %s failed (retrying): %s", self.path, exc)
            self._checkpoint_failing = True
        finally:
            self._write_lock.release()

    def _tick(self) -> None:
        """The reader janitor's call, every `snapshot_s`: checkpoint, and every `WATCH_S` watch the file
        (at once when the checkpoint found the WAL index cut)."""
        self._checkpoint()
        if time.monotonic() - self._watched_at >= WATCH_S:
            self.watch()

    def watch(self) -> None:
        """Stat the file and its WAL index; if the file is not the one opened (replaced, deleted,
        rewritten in place) or the index was cut under it, let go of it and open what is there now, or go
        down until a store is there (see `sqlite_watch`). Skipped (and retried on the next call) while a
        write of this store runs."""
        self._watched_at = time.monotonic()
        if self._down is not None:
            return
        now = file_id(self.path)
        cut = self._shm_cut()
        if (now == self._file and not cut) or not self._write_lock.acquire(blocking=False):
            return
        try:
            if self._closed.is_set() or self._writer is None:
                return
            old = self._file
            same_inode = now is not None and old is not None and now.same_inode(old)
            if cut and same_inode:
                # the same file (not read to make sure: a new connection would read the cut index): its
                # -wal holds commits not yet in it, and the -shm is the one other processes map; both
                # stay, and reopening rebuilds the index from the WAL
                reason = f"the WAL index of the prediction store {self.path} (its -shm file) was cut"
                log.warning("%s under the store: reopening it", reason)
                self._let_go(reason, keep_sidecars=True)
            else:
                with self._check_lock:
                    if same_inode and self._continues():
                        self._file = now  # the same store, written by SQLite (a checkpoint)
                        return
                what = ("deleted" if now is None else "rewritten in place" if same_inode else "replaced")
                log.warning("the prediction store file %s was %s: reopening it", self.path, what)
                self._let_go(f"the prediction store file {self.path} was {what}")
            self._reopen_or_go_down()
        finally:
            self._write_lock.release()

    def _shm_cut(self) -> bool:
        """Whether the WAL index (``-shm``) was cut or replaced under the store since it was opened
        (`sqlite_watch.shm_shrank`: reading it now may be SIGBUS); a grown one is remembered. One stat."""
        known, now = self._shm, shm_of(self.path)
        if shm_shrank(known, now):
            return True
        if known is not None and now is not None and now.size > known.size:
            self._shm = now  # (threads may race here: a lost update only remembers a smaller size)
        return False

    def _check_file(self) -> None:
        """As a reader begins a snapshot (once every `snapshot_s` per reader, not per lookup): a StoreError
        if the file at the path is no longer the one opened, so that no lookup reads a file rewritten
        under its connection's cached pages for longer than one snapshot. A file that SQLite wrote (a
        checkpoint) is the same store (`_continues`, once per change, ~0.3 ms); another one is reopened
        by the janitor's next wake-up. It runs before the snapshot begins, and first of all checks the
        WAL index (`_shm_cut`): beginning a snapshot reads it, and a cut one is SIGBUS."""
        if self._down is None and self._shm_cut():
            self._watched_at = -math.inf  # the janitor's next wake-up reopens it
            raise StoreUnavailable(f"the WAL index of the prediction store {self.path} (its -shm file) was "
                                   "cut under the store; reopening it")
        now = file_id(self.path)
        if now == self._file:
            return
        with self._check_lock:
            old = self._file
            if now == old:
                return
            if now is not None and old is not None and now.same_inode(old) and self._continues():
                self._file = now
                return
        self._watched_at = -math.inf  # the janitor's next wake-up reopens it
        raise StoreUnavailable(f"the prediction store file {self.path} changed under the store; reopening it")

    def _continues(self) -> bool:
        """Whether the file at the path holds the same store as before (`sqlite_watch.continues`), read
        through a new connection (no cached pages); the known versions follow it."""
        try:
            con = connect(self.path, self._busy_timeout_s, readonly=True)
        except StoreError:
            return False
        try:
            stamps = stamps_of(con)
        except sqlite3.Error:
            return False
        finally:
            con.close()
        if not continues(self._stamps, stamps):
            return False
        self._stamps = stamps
        return True

    def _failure(self, error: StoreError) -> StoreError:
        """`error`, or an unavailable one if it says the store is broken while the file at the path is no
        longer the one opened: a file rewritten in place reads as malformed until it is reopened (the
        janitor's next wake-up does it, `watch`), which is no reason to call the store broken."""
        if not isinstance(error, StoreBroken) or file_id(self.path) == self._file:
            return error
        self._watched_at = -math.inf
        return StoreUnavailable(f"{error} (the file changed under the store; reopening it)")

    def _let_go(self, reason: str, *, keep_sidecars: bool = False) -> None:
        """Close every connection to the old file without deleting another file's WAL (`sqlite_watch`);
        lookups meanwhile are a StoreError saying `reason`. Under the write lock. The old file's -wal and
        -shm are deleted, unless `keep_sidecars` (the file stays: they are still its own)."""
        removed = [] if keep_sidecars else remove_sidecars(self.path, self._sidecars)
        writer, anchor, self._writer, self._anchor = self._writer, self._anchor, None, None
        assert writer is not None and anchor is not None
        writer.close()  # the anchor holds the file: neither a checkpoint into it nor a deletion
        self._pool.close(reason, REOPEN_WAIT_S)
        anchor.close()  # read-only: it cannot delete anything either
        if removed:
            log.info("removed the old store file's %s", " and ".join(removed))

    def _reopen_or_go_down(self) -> None:
        """Open the file at the path as the store now (a new reader pool and record cache); if there is
        no store there, go down. Under the write lock, with no connection open."""
        try:
            pool = self._open(require_active=True)
        except StoreError as exc:
            self._go_down(exc)
            return
        self._pool, self._down = pool, None
        log.info("reopened the prediction store file %s", self.path)

    def _go_down(self, error: StoreError) -> None:
        """No store can be read at the path: every call is a StoreError of `error`'s kind saying what it
        says, until a thread that looks once every `WATCH_S` finds one there again."""
        self._down, self._down_kind = str(error), type(error)
        self._pool.close(error)
        log.warning("the prediction store cannot answer: %s", error)
        if self._recovery is None or not self._recovery.is_alive():
            self._recovery = threading.Thread(target=self._recover, name="augury-store-reopen", daemon=True)
            self._recovery.start()

    def _recover(self) -> None:
        while not self._closed.wait(WATCH_S):
            with self._write_lock:
                if self._closed.is_set():
                    return
                try:
                    pool = self._open(require_active=True)
                except StoreError as exc:
                    if str(exc) != self._down:
                        log.warning("the prediction store still cannot answer: %s", exc)
                        self._down, self._down_kind = str(exc), type(exc)
                        self._pool.close(exc)  # (closed already: this is what calls now say)
                    continue
                self._pool, self._down = pool, None
            log.info("the prediction store file %s is back: reopened it", self.path)
            return

    def close(self) -> None:
        """Close every connection and stop the reader pool's janitor and the recovery thread (idempotent)."""
        self._closed.set()
        recovery = self._recovery
        if recovery is not None and recovery is not threading.current_thread():
            recovery.join()
        with self._write_lock:
            if self._writer is not None and self._down is None and self._shm_cut():
                # closing as usual checkpoints through the index, which is SIGBUS now: let go as a reopen
                # does (the writer first, while the anchor keeps it from checkpointing)
                self._let_go("the prediction store is closed", keep_sidecars=True)
            if self._anchor is not None:  # first: the writer closes last, as SQLite expects (it may then
                self._anchor.close()  # checkpoint the WAL and delete it)
                self._anchor = None
            self._pool.close()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._down, self._down_kind = "the prediction store is closed", StoreUnavailable
