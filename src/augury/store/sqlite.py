"""The SQLite prediction store: the embedded default, one file, any number of reading processes.

`SQLiteStore` is built in layers, one idea per module:

- `sqlite_file.StoreFile`: the hold on the file: the writer connection, the reader pool, checkpoints,
  and what happens when the file is replaced, deleted, rewritten or its WAL index cut under the store
  (watched once a second off the lookups, `sqlite_watch`; while there is no store at the path every call
  is a `StoreError`, and a server's readiness says so, until one is there again);
- `sqlite_reads.StoreReads`: lookups and the other reads, each on a reader borrowed from the pool and
  inside its read snapshot (`sqlite_read`, kept for up to `snapshot_s`); version listings read the
  latest committed state;
- `sqlite_writes.StoreWrites`: publish, activation, rollback, deletion, gc and write-backs, one writer
  at a time (`sqlite_publish`, `sqlite_parts` for a publish in parts);
- this module: the settings of the reader connections and the store's options.

sqlite3 errors become `StoreError` at every public method.
"""

from __future__ import annotations

import math
import os
import sqlite3

from augury.errors import ConfigError
from augury.store.sqlite_errors import store_error
from augury.store.sqlite_schema import connect
from augury.store.sqlite_writes import StoreWrites

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


class SQLiteStore(StoreWrites):
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
