"""Which kind of `StoreError` an sqlite3 error is: retry later, or broken (issue 13).

A server answers `StoreUnavailable` with 503 and ``Retry-After`` (a hybrid one computes instead) and
`StoreBroken` with 500, logged with the cause (`serve/errors.py`), so the kind must say whether the same
call can succeed later without anyone touching the file. Judged by SQLite's primary result code
(``sqlite_errorcode & 0xff``; Python 3.11 gives it on every error raised by the library):

- **unavailable**: ``SQLITE_BUSY``/``SQLITE_LOCKED`` (another connection held the lock past
  ``busy_timeout_s``: a long publish, a backup), ``SQLITE_CANTOPEN`` (the file is missing or being
  replaced: ``mv``, ``rm``), ``SQLITE_IOERR`` (a disk I/O error: a full or detached volume, a file
  deleted under an open WAL; the store reopens itself once a store is there again), ``SQLITE_FULL``,
  ``SQLITE_NOMEM``, ``SQLITE_PROTOCOL`` and ``SQLITE_SCHEMA`` (a lock race and a schema change, which
  SQLite itself retries), ``SQLITE_INTERRUPT``; and a connection closed under a call (a reopen).
- **broken**: ``SQLITE_CORRUPT`` (``database disk image is malformed``), ``SQLITE_NOTADB`` (``file is
  not a database``), ``SQLITE_ERROR`` (``no such table: augury_pointer``: an existing file that is not,
  or no longer, an augury store), ``SQLITE_READONLY``, ``SQLITE_PERM``, ``SQLITE_AUTH`` (a file the
  server may not write), ``SQLITE_FORMAT``, ``SQLITE_MISMATCH``, ``SQLITE_RANGE``, ``SQLITE_MISUSE``.
- anything else stays a plain `StoreError` (a server answers it as it answers an unclassified one).

A malformed image is not always a broken store: a file rewritten in place under an open store
(``cp backup.db live.db``) reads as malformed until the store reopens it (`sqlite_watch`), so the store
asks `StoreFile._failure`, which calls a corrupt read of a file that changed since it was opened
unavailable.
"""

from __future__ import annotations

import sqlite3

from augury.errors import StoreBroken, StoreError, StoreUnavailable

#: primary result codes (sqlite3.h) that mean "retry later".
UNAVAILABLE_CODES = frozenset({
    5,   # SQLITE_BUSY
    6,   # SQLITE_LOCKED
    7,   # SQLITE_NOMEM
    9,   # SQLITE_INTERRUPT
    10,  # SQLITE_IOERR
    13,  # SQLITE_FULL
    14,  # SQLITE_CANTOPEN
    15,  # SQLITE_PROTOCOL
    17,  # SQLITE_SCHEMA
})
#: primary result codes that mean "the store answered but cannot serve".
BROKEN_CODES = frozenset({
    1,   # SQLITE_ERROR (no such table, no such column: not, or no longer, an augury store)
    3,   # SQLITE_PERM
    8,   # SQLITE_READONLY
    11,  # SQLITE_CORRUPT
    20,  # SQLITE_MISMATCH
    21,  # SQLITE_MISUSE
    23,  # SQLITE_AUTH
    24,  # SQLITE_FORMAT
    25,  # SQLITE_RANGE
    26,  # SQLITE_NOTADB
})
#: the primary result code of a malformed database image.
CORRUPT = 11


def code_of(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of `exc`, or None when the sqlite3 module raised it itself."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def kind_of(exc: sqlite3.Error) -> type[StoreError]:
    """`StoreUnavailable`, `StoreBroken` or (unclassified) `StoreError` for `exc` (module docstring)."""
    code = code_of(exc)
    if code is None:
        # raised by the sqlite3 module, not by SQLite: a call on a connection that a reopen closed
        closed = isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc)
        return StoreUnavailable if closed else StoreError
    if code in UNAVAILABLE_CODES:
        return StoreUnavailable
    if code in BROKEN_CODES:
        return StoreBroken
    return StoreError


def store_error(exc: sqlite3.Error, message: str) -> StoreError:
    """`message` as the kind of StoreError `exc` is (raise it ``from exc``)."""
    return kind_of(exc)(message)


def again(error: StoreError) -> StoreError:
    """A new error of the same kind and message as `error` (to raise it once more, from another call)."""
    if isinstance(error, StoreUnavailable):
        return StoreUnavailable(str(error), error.retry_after_s)
    return type(error)(str(error))
