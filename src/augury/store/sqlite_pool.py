"""The SQLite store's pool of reader connections, and its janitor.

Thread-safety: `SQLiteStore.get_many` may be called from any number of threads. Each call borrows one
reader connection (`sqlite_read.Reader`) from a pool of at most `max_readers` (created on demand; WAL lets
them all read at once) and gives it back; a caller that finds all of them busy waits up to
`pool_timeout_s`, then gets a StoreError. The pool also holds the record cache its readers share
(`recordcache`) and the `generation` that a write through the store (read-your-writes) or a reader
that saw the active version switch (no reader goes back a version) bumps: see `sqlite_read`.

**The janitor.** An open snapshot pins the WAL: a checkpoint cannot copy frames committed after it began
into the database file, nor restart the WAL, so a publish's pages would stay in the WAL (lookups of them
measured 1.7x slower) and the WAL would grow with every publish. While any reader holds a snapshot, a
daemon thread per pool wakes every `snapshot_s`, takes the idle readers out of the pool one at a time
without blocking, ends the snapshots older than `snapshot_s` and puts the readers back (so a connection
is still only ever used by the one thread holding it, and lookups take no lock); then it calls the
store's `checkpoint` (passive, run only when something was committed since the last complete one). It
starts with the first snapshot, exits after `JANITOR_LINGER_S` without any, and is stopped and joined
by `close`. So an idle store holds no snapshot after about 2 `snapshot_s`, and no thread soon after: a
process that forks batch workers (which `batch.engine.LocalEngine` does only when it runs no other
thread) is single-threaded again once its store is idle. A forked child must not use its parent's store
(SQLite connections must not cross a fork); the janitor does not exist there.

**The file.** The store's `checkpoint` callback also watches the file once a second (`sqlite_watch`),
and `check_file` runs before each snapshot begins (two stats, the file and its WAL index, once per
`snapshot_s` per reader, not per lookup). A store whose file changed closes its pool (`close` with the
reason, which `acquire` then raises) and opens a new one; a reader lent out at that moment is closed
when it comes back.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable

from augury.errors import StoreError, StoreUnavailable
from augury.store.recordcache import RecordCache
from augury.store.sqlite_errors import again
from augury.store.sqlite_read import NO_SNAPSHOT, Reader

log = logging.getLogger(__name__)

#: the janitor exits after this long without any snapshot to end (starting a thread costs ~0.1 ms, so it
#: should not come and go with every request of a quiet server).
JANITOR_LINGER_S = 1.0

#: the janitor wakes every `snapshot_s`, but never more often than this.
JANITOR_MIN_PERIOD_S = 0.01


class ReaderPool:
    """At most `size` reader connections, created on demand, lent to one thread at a time; with
    snapshots, the janitor that ends the idle ones (see the module docstring)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        size: int,
        timeout_s: float,
        *,
        snapshot_s: float = 0.0,
        checkpoint: Callable[[], None] = lambda: None,
        cache_entries: int = 0,
        check_file: Callable[[], None] = lambda: None,
    ) -> None:
        self._connect = connect
        #: called as each snapshot begins: raises a StoreError if the file is not the one opened.
        self._check_file = check_file
        #: decoded records of the versions read, shared by the readers (used inside snapshots).
        self.cache = RecordCache(cache_entries if snapshot_s > 0 else 0)
        self._size = size
        self._timeout_s = timeout_s
        self._snapshot_s = snapshot_s
        self._checkpoint = checkpoint
        self._free: queue.SimpleQueue[Reader] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._all: list[Reader] = []
        self._closed = False
        #: what `acquire` raises (a new one of its kind) once the pool is closed (`close`).
        self._closed_error: StoreError = StoreUnavailable("the prediction store is closed")
        #: signalled when a reader lent out before `close` comes back (and is closed).
        self._returned = threading.Condition(self._lock)
        self._janitor: threading.Thread | None = None
        self._stop = threading.Event()
        #: bumped by `wrote` and `switched`; see `Reader.lookup`.
        self.generation = 0
        self._generation_lock = threading.Lock()  # (`wrote` and `switched` may run at once)

    def wrote(self) -> None:
        """A write through this store committed (or failed): every snapshot begun before now is renewed
        before its next lookup."""
        with self._generation_lock:
            self.generation += 1

    def switched(self, began_under: int) -> int:
        """A reader's new snapshot, begun under generation `began_under`, shows another active version than
        its last one: every other snapshot begun before now is renewed before its next lookup, so no reader
        answers from the older version after this one answered from the newer. Returns the generation the
        reader is at: the new one if nothing was written since `began_under` (its snapshot is then as
        fresh as the bump), else `began_under` (it renews too)."""
        with self._generation_lock:
            unchanged = self.generation == began_under
            self.generation += 1
            return self.generation if unchanged else began_under

    def acquire(self) -> Reader:
        if self._closed:
            raise again(self._closed_error)
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if len(self._all) < self._size:
            # a new connection opens whatever file is at the path now: if that is no longer the file
            # this pool was opened on (replaced, perhaps by one another process holds locked), fail now
            # rather than read it, or wait up to busy_timeout_s for its lock on the caller's thread
            # (a server's event loop: a request in tests/serve/test_sqlite_failures.py got no answer in 30 s)
            self._check()
        with self._lock:
            if self._closed:
                raise again(self._closed_error)
            if len(self._all) < self._size:
                reader = Reader(self._connect(), self._snapshot_s, self._snapshot_began, self.cache,
                                self.switched, self._check)
                self._all.append(reader)
                return reader
        try:
            return self._free.get(timeout=self._timeout_s)
        except queue.Empty:
            raise StoreUnavailable(
                f"all {self._size} reader connections of the prediction store stayed busy for "
                f"{self._timeout_s:g} s (raise max_readers or pool_timeout_s)"
            ) from None

    def discard(self, reader: Reader) -> None:
        """Close a connection that failed mid-use instead of lending it again; a new one replaces it."""
        try:
            reader.con.close()
        except sqlite3.Error as exc:
            log.warning("closing a failed store reader connection: %s", exc)
        with self._lock:
            if reader in self._all:
                self._all.remove(reader)
                self._returned.notify_all()

    def release(self, reader: Reader) -> None:
        if self._closed:
            self.discard(reader)
            return
        self._free.put(reader)
        if self._closed:  # closed meanwhile: `close` may have swept the free readers before this one came
            self._close_free()

    def _close_free(self) -> None:
        while True:
            try:
                reader = self._free.get_nowait()
            except queue.Empty:
                return
            self.discard(reader)

    @property
    def open_readers(self) -> int:
        """Reader connections open now (lent out or idle)."""
        return len(self._all)

    def close(self, reason: str | StoreError = "the prediction store is closed", wait_s: float = 0.0) -> None:
        """Stop the janitor (waiting for its sweep to finish, unless it is the caller), close the idle
        connections, and wait up to `wait_s` for the lent ones to come back (each is closed as it does);
        from now on `acquire` raises a StoreError saying `reason` (of its kind; a string: unavailable)."""
        with self._lock:
            self._closed_error = reason if isinstance(reason, StoreError) else StoreUnavailable(reason)
            self._closed = True
            janitor, self._janitor = self._janitor, None
        self._stop.set()
        if janitor is not None and janitor is not threading.current_thread():
            janitor.join()
        self._close_free()
        deadline = time.monotonic() + wait_s
        with self._lock:
            while self._all and self._returned.wait(max(0.0, deadline - time.monotonic())):
                pass

    # -- the janitor ---------------------------------------------------------------------------------------

    def _check(self) -> None:
        """The store's `check_file`, before a snapshot begins or a reader is made. When it fails (the
        file or its WAL index changed), a janitor is made sure of: its next wake-up watches the file and
        reopens it (`StoreFile.watch`). A store idle for `JANITOR_LINGER_S` has none, and nothing else
        would: its lookups then failed until a restart (seen: a file replaced under an idle store)."""
        try:
            self._check_file()
        except StoreError:
            self._snapshot_began()
            raise

    def _snapshot_began(self) -> None:
        """A reader began a snapshot: make sure a janitor will end it once it sits idle. Under the lock,
        like the janitor's decision to exit, so a snapshot never begins unwatched. (The store's
        `check_file` ran before it began: a StoreError fails the lookup that would have begun it.)"""
        with self._lock:
            if self._closed or (self._janitor is not None and self._janitor.is_alive()):
                return  # (a janitor copied by fork is not alive: the child gets its own)
            self._janitor = threading.Thread(target=self._tend, name="augury-store-janitor", daemon=True)
            self._janitor.start()

    def _tend(self) -> None:
        """The janitor's loop: every `snapshot_s`, end idle readers' stale snapshots and checkpoint;
        exit when the pool closes or after JANITOR_LINGER_S without any snapshot."""
        quiet_since = time.monotonic()
        failing = False
        while not self._stop.wait(max(self._snapshot_s, JANITOR_MIN_PERIOD_S)):
            try:
                self._end_idle_snapshots()
                self._checkpoint()
                failing = False
            except Exception:  # a bug: keep tending (an unwatched snapshot pins the WAL), say it once
                if not failing:
                    log.exception("the store reader janitor failed (retrying every %g s)", self._snapshot_s)
                failing = True
            now = time.monotonic()
            with self._lock:
                if self._closed:
                    return
                if any(r.since != NO_SNAPSHOT for r in self._all):
                    quiet_since = now
                elif now - quiet_since >= JANITOR_LINGER_S:
                    if self._janitor is threading.current_thread():
                        self._janitor = None
                    return

    def _end_idle_snapshots(self) -> None:
        """Take each idle reader out of the pool (never waiting), end its snapshot if older than
        `snapshot_s`, and put it back; a reader whose COMMIT fails is discarded."""
        stale = time.monotonic() - self._snapshot_s
        for _ in range(self._free.qsize()):
            try:
                reader = self._free.get_nowait()
            except queue.Empty:
                return
            if reader.since <= stale:
                try:
                    reader.close_snapshot()
                except sqlite3.Error as exc:
                    log.warning("ending an idle store reader's snapshot failed (reconnecting): %s", exc)
                    self.discard(reader)
                    continue
            self.release(reader)
