"""The SQLite store's file layout: opening, checking and creating it, and reading its version table.

One database file (WAL mode, `synchronous=NORMAL`) holds:

- ``augury_store(name, value)``: the format marker (``format = augury-prediction-store``, ``format_version``);
  a file without it is not a store, and opening one is a clear `StoreError`; and ``store_id``, random,
  written when the file is created (stores created before it have none), which tells one store's file
  from another's (`sqlite_watch`);
- ``augury_versions``: one row per version (``id INTEGER PRIMARY KEY AUTOINCREMENT``, so a number is never
  reused, even after its row is deleted), with its state, row count, layout (``columns``: JSON
  ``{"columns": [...]}``, with ``"features_hash": true`` when its records end with one: `codec`), TTL,
  profile and meta;
- ``augury_pointer``: one row, the active version (NULL before the first activation);
- ``preds_<n>(key TEXT, v BLOB)``: version n's rows, one MessagePack record per key (see `codec`), with a
  unique index ``preds_<n>_key`` built after the bulk load.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.request
import uuid
from typing import Any

from augury.errors import StoreBroken, StoreError, StoreUnavailable
from augury.store.base import LOADING, ORPHAN, VersionInfo
from augury.store.codec import View, load_json
from augury.store.lease import lease_path, writer_alive
from augury.store.sqlite_errors import kind_of, store_error

FORMAT = "augury-prediction-store"
FORMAT_VERSION = 1

#: after a checkpoint, the WAL file is truncated back to this size (a big publish grows it).
WAL_SIZE_LIMIT_BYTES = 64 << 20

_DDL = (
    "CREATE TABLE augury_store (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE augury_versions (id INTEGER PRIMARY KEY AUTOINCREMENT, model_version TEXT NOT NULL, "
    "created_at REAL NOT NULL, state TEXT NOT NULL, row_count INTEGER NOT NULL DEFAULT 0, "
    "columns TEXT NOT NULL, ttl_s REAL, profile TEXT NOT NULL, meta TEXT NOT NULL)",
    "CREATE TABLE augury_pointer (id INTEGER PRIMARY KEY CHECK (id = 1), active INTEGER)",
    "INSERT INTO augury_pointer VALUES (1, NULL)",
)

#: the tables every store has (beside one per version).
TABLES = ("augury_store", "augury_versions", "augury_pointer")

VERSIONS_SQL = (
    "SELECT id, model_version, created_at, state, row_count, columns, ttl_s, profile, meta, "
    "(SELECT active FROM augury_pointer) FROM augury_versions"
)
ACTIVE_SQL = (
    "SELECT v.id, v.model_version, v.columns, v.ttl_s FROM augury_pointer p "
    "JOIN augury_versions v ON v.id = p.active"
)


def layout(columns: tuple[str, ...], hashed: bool) -> dict[str, Any]:
    """A version's record layout, as its ``columns`` field holds it (JSON; see the module docstring)."""
    return {"columns": list(columns), "features_hash": True} if hashed else {"columns": list(columns)}


def table(version: int) -> str:
    """The table holding version `version`'s rows (`version` is an int from the versions table)."""
    return f"preds_{int(version)}"


def connect(path: str, busy_timeout_s: float, *, create: bool = False, readonly: bool = False,
            ) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), usable from any one thread at a time.

    SQLite creates a missing file on connect unless told not to; only `create` lets it (a publish), so
    a mistyped path, or a store deleted under a running server, is a clear error instead of a new empty
    store: then a missing file is the `no_store` error. `readonly` opens the file read-only (the
    readers: such a connection can never checkpoint or delete the WAL when it closes, see
    `sqlite_watch`). No connection memory-maps the file (``mmap_size`` stays 0): a file rewritten in
    place by another process (``cp other.db live.db``) must give read errors, not SIGBUS (see
    `sqlite.READER_MMAP_BYTES`)."""
    mode = "ro" if readonly else "rwc" if create else "rw"
    uri = f"file:{urllib.request.pathname2url(os.path.abspath(path))}?mode={mode}"
    try:
        con = sqlite3.connect(
            uri, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False, cached_statements=512,
            uri=True,
        )
    except sqlite3.Error as exc:
        if not create and not os.path.exists(path):
            raise no_store(path) from exc
        raise store_error(exc, f"cannot open the prediction store {path}: {exc}") from exc
    try:
        con.execute("PRAGMA mmap_size=0")  # whatever the SQLite build's default (see the docstring)
    except sqlite3.Error as exc:
        con.close()
        raise store_error(exc, f"cannot open the prediction store {path}: {exc}") from exc
    return con


def no_store(path: str, why: str = "") -> StoreError:
    """The error for a store that is not there: one line naming the path. `StoreUnavailable`: a store
    deleted or being replaced under a server may be there again (the server reopens it by itself)."""
    return StoreUnavailable(f"no store at {path}{why} (a store is created by its first publish; "
                            "check the path)")


def prepare(con: sqlite3.Connection, path: str, *, create: bool = False) -> None:
    """Check that `con` is on an augury store, creating the layout in an empty file if `create`; switch
    to WAL. An empty file without `create` is `no_store`, like a missing one."""
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        kind = kind_of(exc)
        if kind is StoreBroken:  # not a database, a malformed one
            raise StoreBroken(f"{path} is not an augury prediction store (not an SQLite database: {exc})"
                              ) from exc
        raise kind(f"cannot open the prediction store {path}: {exc}") from exc
    if not tables and not create:
        raise no_store(path, " (the file is empty)")
    try:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreBroken(f"cannot switch the prediction store {path} to WAL mode (got {mode})")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        if not tables:
            _create(con)
            tables = set(TABLES)
        if "augury_store" not in tables:
            raise StoreBroken(
                f"{path} is an SQLite database but not an augury prediction store "
                f"(it has no augury_store table; tables: {sorted(tables)[:5]})"
            )
        marker = dict(con.execute("SELECT name, value FROM augury_store").fetchall())
    except sqlite3.Error as exc:
        raise store_error(exc, f"cannot open the prediction store {path}: {exc}") from exc
    if marker.get("format") != FORMAT:
        raise StoreBroken(f"{path} is not an augury prediction store "
                          f"(format marker {marker.get('format')!r})")
    if str(marker.get("format_version")) != str(FORMAT_VERSION):
        raise StoreBroken(
            f"{path} has store format version {marker.get('format_version')}; this augury reads "
            f"version {FORMAT_VERSION}"
        )
    missing = sorted(set(TABLES) - tables)
    if missing:
        raise StoreBroken(f"the prediction store {path} is damaged: "
                          f"it has no {' and no '.join(missing)} table")


def _create(con: sqlite3.Connection) -> None:
    con.execute("BEGIN IMMEDIATE")
    try:
        if con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:  # nobody beat us to it
            for ddl in _DDL:
                con.execute(ddl)
            con.execute(
                "INSERT INTO augury_store VALUES ('format', ?), ('format_version', ?), ('store_id', ?)",
                (FORMAT, str(FORMAT_VERSION), uuid.uuid4().hex),
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def read_versions(con: sqlite3.Connection, path: str, active_only: bool = False) -> list[VersionInfo]:
    """Every version (or only the active one), oldest first, with its active flag; a 'loading' version
    whose publish died is ORPHAN."""
    where = " WHERE id = (SELECT active FROM augury_pointer)" if active_only else " ORDER BY id"
    sql = VERSIONS_SQL + where
    return [_info(row, path) for row in con.execute(sql).fetchall()]


def _info(row: tuple[Any, ...], path: str) -> VersionInfo:
    number, model_version, created_at, state, row_count, columns, ttl_s, profile, meta, active = row
    if state == LOADING and not writer_alive(lease_path(path, number)):
        state = ORPHAN
    shape = load_json(columns)
    return VersionInfo(
        version=str(number),
        model_version=model_version,
        created_at=created_at,
        row_count=row_count,
        columns=tuple(shape["columns"]),
        state=state,
        active=number == active,
        ttl_s=ttl_s,
        profile=load_json(profile),
        meta=load_json(meta),
        features_hash=bool(shape.get("features_hash")),
    )


def read_active(con: sqlite3.Connection) -> tuple[str, View] | None:
    """The active version's table and view, or None when no version is active."""
    row = con.execute(ACTIVE_SQL).fetchone()
    if row is None:
        return None
    number, model_version, columns, ttl_s = row
    shape = load_json(columns)
    view = View(str(number), model_version, tuple(shape["columns"]), ttl_s, bool(shape.get("features_hash")))
    return table(number), view
