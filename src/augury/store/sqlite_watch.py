"""Noticing that a store's file changed under the open store, and letting go of the old file safely.

An open `SQLiteStore` holds connections to one file. Three things can happen to that file behind its
back (issue 11), and each needs the connections closed and the path opened again:

- **replaced**: ``mv other.db live.db``, or ``rm`` and a new publish: the path names another inode,
  while the open connections keep reading the old one, forever and without an error;
- **deleted**: the path names nothing; the store cannot answer until a store is there again;
- **rewritten in place**: ``cp other.db live.db``, or a truncation: the same inode with other bytes. The
  connections' page caches and SQLite's WAL index still describe the old bytes. Nothing memory-maps the
  file (a mapped page past a truncation is SIGBUS, which kills the process: measured, exit 135), so a
  read of such a file is an error (``database disk image is malformed``), never a crash.

**Its WAL index truncated** (``truncate -s 0 live.db-shm``, ``: > live.db-shm``, a copy onto it). SQLite
memory-maps the ``-shm`` file into every connection, in every process that has the store open: it is the
shared memory through which they coordinate, and SQLite offers no way around the mapping in WAL mode
except exclusive locking (``locking_mode=EXCLUSIVE`` or the ``unix-excl`` VFS keep the index in heap
memory, but lock every other connection and process out of the file, publishers included). A mapped page
past the new end of the file is SIGBUS at the next read of it (measured: exit 135, no log line), and a
connection reads the index's header whenever it begins a read transaction. So before a reader begins a
snapshot, before the janitor's checkpoint and at each watch, the store stats the ``-shm`` (`shm_of`) and
compares it with what it saw (`shm_shrank`): SQLite only ever grows it while a connection has it open,
so a smaller or another file means someone else cut it, and the store lets go of every connection
(closing one unmaps the index without reading it) and reopens the file, which rebuilds the index from the
WAL (nothing committed is lost; the ``-wal`` and ``-shm`` are kept: they are still this store's). A read
that comes between the cut and the stat still dies: the window is the few microseconds between a stat
and the read after it, once per snapshot (`snapshot_s`) per reader, and a lookup inside a snapshot
reads the index only while the WAL holds frames not yet checkpointed (after a publish or a write-back).
So the stat makes a crash unlikely, not impossible: never truncate, copy onto or delete the ``-shm`` or
``-wal`` of a store in use (docs/store.md).

**Cheaply, off the hot path.** The store's reader janitor calls `SQLiteStore.watch` once every
`WATCH_S` (and at its first wake-up after a quiet spell): one ``stat`` of the path, compared with the
`FileId` seen when the file was opened. Only when that changed is the file looked at more closely: a
lookup pays nothing. The same inode with another size or mtime is also what a checkpoint (a publish, a
write-back) does to the file, so the versions in the file are compared with those known
(`continues`): a store has a random id, written when it was created, and its versions are immutable and
numbered without reuse, so a file with the same id whose versions agree with the known ones (the same
creation times, nothing new numbered below a known one) is the same store written by SQLite; anything
else is another file (the store is reopened). A backup of the same store copied over it in place passes
this test; the connections are then kept, with the pages they cached (use ``mv``, see docs/store.md).

**Letting go of the old file.** Closing the last connection to a WAL database normally checkpoints it
and deletes the ``-wal`` and ``-shm`` files *by name*; after a replacement those names may already
belong to the new file's publisher, and deleting its WAL loses its commits. So a store keeps an
*anchor*, a read-only connection that is never lent (a connection keeps a shared lock on its file as
long as it is open), and closes its writer while the anchor is open: the writer can then neither
checkpoint into the file nor delete anything. Readers and the anchor are read-only, and a read-only
connection cannot take the lock that deleting needs. The old ``-wal`` and ``-shm`` are removed by the
store itself, and only while they are the very files it opened (`sidecars`, by inode, checked while its
own connections still hold them open, so an inode cannot have been reused): left there, the old WAL
would be read as part of the new file (and for a file rewritten in place, its frames describe the old
bytes). An ordinary `close` closes the anchor first and the writer last, as SQLite expects.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass

#: how often the janitor stats the store's file (the most a replaced file is served after the change,
#: once lookups come; a stat costs ~1 µs).
WATCH_S = 1.0

#: the files SQLite keeps beside a WAL database.
SIDECARS = ("-wal", "-shm")


@dataclass(frozen=True)
class FileId:
    """What `os.stat` says of the store's file: which file (device, inode) and its size and mtime."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    def same_inode(self, other: FileId) -> bool:
        return (self.dev, self.ino) == (other.dev, other.ino)


def file_id(path: str) -> FileId | None:
    """The file at `path` now, or None when there is none (or it cannot be stat'ed)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileId(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Stamps:
    """What tells one store's file from another's: its ``store_id`` (None in a store created before
    augury wrote one) and each version's number and creation time."""

    store_id: str | None
    versions: dict[int, float]


def stamps_of(con: sqlite3.Connection) -> Stamps:
    """The `Stamps` of the store `con` is on (sqlite3 errors propagate)."""
    row = con.execute("SELECT value FROM augury_store WHERE name = 'store_id'").fetchone()
    versions = dict(con.execute("SELECT id, created_at FROM augury_versions").fetchall())
    return Stamps(None if row is None else str(row[0]), versions)


def continues(known: Stamps, now: Stamps) -> bool:
    """Whether `now` can be the store that was `known`, written by SQLite since (see the module
    docstring): the same store id; every version in both created at the same time; no new version
    numbered at or below a known one (numbers are never reused). Without store ids, a file that shares
    no version with the known one is taken to be another store (a reopen, which is harmless)."""
    if known.store_id != now.store_id:
        return False
    shared = known.versions.keys() & now.versions.keys()
    if any(known.versions[v] != now.versions[v] for v in shared):
        return False
    newest = max(known.versions, default=0)
    if any(v <= newest for v in now.versions.keys() - known.versions.keys()):
        return False
    return known.store_id is not None or bool(shared) or not known.versions


@dataclass(frozen=True)
class Shm:
    """The ``-shm`` file (SQLite's WAL index) as seen: which file (device, inode) and its size in bytes.
    Taken once per read snapshot, write and janitor wake-up, never per lookup."""

    dev: int
    ino: int
    size: int

    def same_file(self, other: Shm) -> bool:
        return (self.dev, self.ino) == (other.dev, other.ino)


def shm_of(path: str) -> Shm | None:
    """The ``-shm`` beside `path` now, or None when there is none."""
    try:
        st = os.stat(path + "-shm")
    except OSError:
        return None
    return Shm(st.st_dev, st.st_ino, st.st_size)


def shm_shrank(known: Shm | None, now: Shm | None) -> bool:
    """Whether the ``-shm`` is no longer what SQLite's connections have mapped (see the module
    docstring): gone, another file, or smaller than `known` (SQLite only grows it while it is open)."""
    if known is None:
        return False
    return now is None or not now.same_file(known) or now.size < known.size


def sidecars(path: str) -> dict[str, tuple[int, int]]:
    """The ``-wal`` and ``-shm`` files beside `path` now, by suffix: (device, inode)."""
    found = {}
    for suffix in SIDECARS:
        with contextlib.suppress(OSError):
            st = os.stat(path + suffix)
            found[suffix] = (st.st_dev, st.st_ino)
    return found


def remove_sidecars(path: str, opened: dict[str, tuple[int, int]]) -> list[str]:
    """Delete the ``-wal`` and ``-shm`` beside `path` that are still the files in `opened` (the old
    file's, see the module docstring); never another file's. Returns the suffixes deleted."""
    removed = []
    now = sidecars(path)
    for suffix, inode in opened.items():
        if now.get(suffix) == inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path + suffix)
                removed.append(suffix)
    return removed
