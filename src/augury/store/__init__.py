"""Prediction stores behind one contract (`base.PredictionStore`), opened by URL.

``open_store(url, **options)`` understands:

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db``: the embedded default, one file
  (`sqlite.SQLiteStore`); options ``max_readers`` (reader connections, default 8), ``busy_timeout_s``
  (how long a write waits for another writer, default 30), ``pool_timeout_s`` (how long a lookup waits
  for a free reader connection, default 10) and ``snapshot_s`` (how long a reader keeps one read snapshot,
  so how late it may see a switch made by another process, default 0.05; 0 turns snapshots off: see
  `sqlite_read`) and ``cache_entries`` (decoded records kept in memory, default 65,536; 0 turns the
  cache off: see `recordcache`). Options may also be given in the URL's query string:
  ``sqlite:///preds.db?snapshot_s=0.2&cache_entries=0``. A missing file is created only with
  ``create=True`` (the default, for publishing); ``create=False``, which every command that only reads or
  changes an existing store uses, makes it a StoreError ("no store at PATH"): a mistyped path must not
  read as an empty store. A file that is not a store is a StoreError.
- ``memory://`` (a private in-process store) and ``memory://name`` (one store per name, shared inside
  the process): `memory.MemoryStore`. ``create`` does not apply: a name never used is an empty store.
- ``redis://[[user]:password@]host:port/db``, ``rediss://...`` (TLS) and ``unix:///path/redis.sock?db=N``:
  `redis_store.RedisStore`, one store shared by many servers (options ``prefix``, ``max_connections``,
  ``pool_timeout_s``, ``socket_timeout_s``, ``connect_timeout_s``, ``lease_s``, ``poll_s``, in the query
  string or as arguments: `redis_conn`). Needs the ``redis`` extra. ``create=False`` makes a prefix where
  nothing was ever published a StoreError, as for a missing SQLite file.

Backends are found by URL scheme in one table (`OPENERS`); adding one is one entry.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Callable
from typing import Any

from augury.errors import ConfigError
from augury.store.base import (
    COMPUTED_AT_COLUMN,
    KEY_COLUMN,
    LOADING,
    MODEL_VERSION_COLUMN,
    ORPHAN,
    READY,
    PredictionReader,
    PredictionStore,
    PublishHandle,
    Publishing,
    SharedPublishing,
    StoredPrediction,
    VersionAdmin,
    VersionInfo,
    WriteBacks,
    WrittenBack,
)
from augury.store.memory import MemoryStore, named_memory_store
from augury.store.sqlite import SQLiteStore

__all__ = [
    "COMPUTED_AT_COLUMN",
    "KEY_COLUMN",
    "LOADING",
    "MODEL_VERSION_COLUMN",
    "ORPHAN",
    "READY",
    "MemoryStore",
    "PredictionReader",
    "PredictionStore",
    "PublishHandle",
    "Publishing",
    "SQLiteStore",
    "SharedPublishing",
    "StoredPrediction",
    "VersionAdmin",
    "VersionInfo",
    "WriteBacks",
    "WrittenBack",
    "open_store",
]

SUPPORTED = ("sqlite:///path.db (relative), sqlite:////abs/path.db, memory://, memory://name, "
             "redis://host:port/db, rediss://host:port/db, unix:///path/redis.sock")
_SQLITE_OPTIONS = {"max_readers": int, "busy_timeout_s": float, "pool_timeout_s": float, "snapshot_s": float,
                   "cache_entries": int}
#: the options that may be 0 (the others must be positive).
_ZERO_ALLOWED = {"snapshot_s": "0 turns read snapshots off", "cache_entries": "0 turns the record cache off"}


def open_store(url: str, *, create: bool = True, **options: Any) -> PredictionStore:
    """Open the prediction store at `url` (see the module docstring); ConfigError for a bad URL or option.

    `create`: a missing SQLite file becomes a new store; False: it is a StoreError ("no store at PATH")."""
    scheme, sep, rest = str(url).partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"store URL '{url}' has no scheme; supported: {SUPPORTED}")
    opener = OPENERS.get(scheme)
    if opener is None:
        raise ConfigError(f"unknown store URL scheme '{scheme}://' in '{url}'; supported: {SUPPORTED}")
    return opener(url, rest, create, options)


def _open_sqlite(url: str, rest: str, create: bool, options: dict[str, Any]) -> PredictionStore:
    rest, _, query = rest.partition("?")
    return SQLiteStore(_sqlite_path(url, rest), url=url, create=create,
                       **_sqlite_options(_merged(url, query, options)))


def _open_memory(url: str, rest: str, create: bool, options: dict[str, Any]) -> PredictionStore:
    if options:
        raise ConfigError(f"memory:// stores take no options (got {sorted(options)})")
    if "/" in rest or "?" in rest:
        raise ConfigError(f"bad memory store URL '{url}': use memory:// or memory://name")
    return named_memory_store(rest) if rest else MemoryStore(url)


def _open_redis(url: str, rest: str, create: bool, options: dict[str, Any]) -> PredictionStore:
    from augury.store.redis_store import RedisStore  # (the redis extra, imported only when used)

    store = RedisStore(url, **options)
    if not create:
        try:
            store.require_existing()
        except BaseException:
            store.close()
            raise
    return store


#: store URL scheme -> how to open it: (url, the URL after "scheme://", create, options) -> store.
OPENERS: dict[str, Callable[[str, str, bool, dict[str, Any]], PredictionStore]] = {
    "sqlite": _open_sqlite,
    "memory": _open_memory,
    "redis": _open_redis,
    "rediss": _open_redis,
    "unix": _open_redis,
}


def _sqlite_path(url: str, rest: str) -> str:
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(
            f"bad SQLite store URL '{url}': use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[1:]
    if path == ":memory:" or path.startswith("file:") or "?" in path:
        raise ConfigError(
            f"bad SQLite store URL '{url}': give a file path (use memory:// for an in-process store)"
        )
    return path


def _merged(url: str, query: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` and those of the URL's query string (``?name=value&...``); a name given twice is an error."""
    if not query:
        return options
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise ConfigError(f"bad query string in store URL '{url}': {exc}") from None
    merged = dict(options)
    for name, value in pairs:
        if name in merged:
            raise ConfigError(f"store option {name} is given twice (in the URL '{url}' or as an argument)")
        merged[name] = value
    return merged


def _sqlite_options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_SQLITE_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown SQLite store option(s) {unknown}; known: {sorted(_SQLITE_OPTIONS)}")
    out: dict[str, Any] = {}
    for name, value in options.items():
        kind = _SQLITE_OPTIONS[name]
        try:
            converted = kind(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"SQLite store option {name}={value!r} is not a number") from exc
        if not math.isfinite(converted):
            raise ConfigError(f"SQLite store option {name} must be a finite number, not {value!r}")
        if isinstance(value, bool) or converted < 0 or (converted == 0 and name not in _ZERO_ALLOWED):
            allowed = f" or 0 ({_ZERO_ALLOWED[name]})" if name in _ZERO_ALLOWED else ""
            raise ConfigError(f"SQLite store option {name} must be positive{allowed}, not {value!r}")
        out[name] = converted
    return out
