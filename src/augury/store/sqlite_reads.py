"""The SQLite store's reads: lookups, the active version as lookups see it, version listings, write-backs.

Each read borrows one reader connection from the pool (`sqlite_pool`), uses it and gives it back. Lookups
and write-back reads run inside the reader's read snapshot (`sqlite_read`: kept for up to `snapshot_s`,
so a switch made by another process is seen that late; one made through this store at once, because
every write here bumps the pool's generation after it commits). Version listings end the snapshot first,
so they always show the latest committed state.

A reader that fails mid-use may be inside a read transaction: it is closed instead of lent again
(`ReaderPool.discard`). sqlite3 errors become `StoreError`s, and a store error read from a file that
changed under the store is an unavailable store, not a broken one (`StoreFile._failure`). That block is
`_read`'s, for every read but `get_many`, which has it inline (see there).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from augury.errors import StoreError
from augury.store import writeback
from augury.store.base import StoredPrediction, VersionInfo, WrittenBack
from augury.store.codec import View
from augury.store.sqlite_errors import store_error
from augury.store.sqlite_file import StoreFile
from augury.store.sqlite_read import Reader
from augury.store.sqlite_schema import read_versions

T = TypeVar("T")


class StoreReads(StoreFile):
    """The reads of `SQLiteStore` (see the module docstring)."""

    def _read(self, doing: str, use: Callable[[Reader, int], T]) -> T:
        """`use(reader, generation)` with a reader borrowed from the pool and the pool's generation read
        before it (see `Reader.lookup`); the reader is given back, or discarded if `use` raised, and
        errors are translated (see the module docstring)."""
        pool = self._pool
        reader = pool.acquire()
        try:
            found = use(reader, pool.generation)
        except sqlite3.Error as exc:
            pool.discard(reader)
            raise self._failure(store_error(exc, f"prediction store {self.path}: {doing} failed: {exc}")
                                ) from exc
        except StoreError as exc:  # a corrupt record, a file changed under the store (`sqlite_read`)
            pool.discard(reader)
            raise self._failure(exc) from exc.__cause__
        except BaseException:
            pool.discard(reader)  # it may be inside a read transaction: never lend it again
            raise
        pool.release(reader)
        return found

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """Look up `keys` in the active version; results aligned with `keys`, `None` for a miss."""
        if not keys:
            return []
        # `_read`'s block, inline: this runs on every static request, and the call through `_read` with
        # the closure it needs cost 0.3 µs more of a one-key lookup's 6.6 µs p50 (200k-row store, 6
        # interleaved rounds of 30,000 random keys; a context manager per lookup cost more still). Keep
        # the two the same.
        pool = self._pool
        reader = pool.acquire()
        try:
            found = reader.lookup(keys, pool.generation)
        except sqlite3.Error as exc:
            pool.discard(reader)
            raise self._failure(store_error(exc, f"prediction store {self.path}: lookup failed: {exc}")
                                ) from exc
        except StoreError as exc:  # a corrupt record, a file changed under the store (`sqlite_read`)
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
        found = self._read("lookup", Reader.lookup_view)
        return None if found is None else found[1]

    def _latest(self, doing: str, read: Callable[[sqlite3.Connection], T]) -> T:
        """`read(connection)` on a reader outside any snapshot, so it reads the latest committed state."""

        def use(reader: Reader, _generation: int) -> T:
            reader.end_snapshot()
            return read(reader.con)

        return self._read(doing, use)

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first; a 'loading' version whose publish died shows as ORPHAN."""
        return self._latest("listing versions", lambda con: read_versions(con, self.path))

    def active(self) -> VersionInfo | None:
        """The active version, or None before the first activation."""
        found = self._latest("reading the active version",
                             lambda con: read_versions(con, self.path, active_only=True))
        return found[0] if found else None

    def written_back(self, keys: Sequence[str], model_version: str) -> list[WrittenBack | None]:
        """The unexpired write-backs of `keys` made by `model_version`, aligned with `keys`. Read in a
        reader's snapshot: another process's write-backs show within `snapshot_s`, this store's at once."""
        if not keys:
            return []

        def read(con: sqlite3.Connection) -> list[WrittenBack | None]:
            return writeback.read(con, keys, model_version, time.time())

        return self._read("reading write-backs", lambda reader, generation: reader.read(read, generation))
