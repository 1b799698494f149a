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

``redis://`` is reserved for a Redis backend, not supported yet. It would fit the same
contract: each version is a key namespace (``<prefix>:v<n>``, a hash of key -> the same MessagePack
record as SQLite's, read with chunked HMGET); version metadata is a hash (``<prefix>:meta:<n>``);
numbers come from INCR on a counter, so they are never reused; the active version is one pointer key
switched with SET inside MULTI (atomic), and a lookup reads pointer and rows in one server-side script so
it never mixes versions; a live publish refreshes a lease key with an expiry, so a 'loading' version
without a lease is an orphan; the connection pool is bounded like SQLite's readers.
"""

from __future__ import annotations

import math
import urllib.parse
from typing import Any

from augury.errors import ConfigError
from augury.store.base import (
    COMPUTED_AT_COLUMN,
    KEY_COLUMN,
    LOADING,
    MODEL_VERSION_COLUMN,
    ORPHAN,
    READY,
    PredictionStore,
    StoredPrediction,
    VersionInfo,
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
    "PredictionStore",
    "SQLiteStore",
    "StoredPrediction",
    "VersionInfo",
    "WrittenBack",
    "open_store",
]

SUPPORTED = "sqlite:///path.db (relative), sqlite:////abs/path.db, memory://, memory://name"
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
    if scheme == "sqlite":
        rest, _, query = rest.partition("?")
        return SQLiteStore(_sqlite_path(url, rest), url=url, create=create,
                           **_sqlite_options(_merged(url, query, options)))
    if scheme == "memory":
        if options:
            raise ConfigError(f"memory:// stores take no options (got {sorted(options)})")
        if "/" in rest or "?" in rest:
            raise ConfigError(f"bad memory store URL '{url}': use memory:// or memory://name")
        return named_memory_store(rest) if rest else MemoryStore(url)
    if scheme in ("redis", "rediss"):
        raise ConfigError(
            f"Redis prediction stores are not supported yet; supported now: {SUPPORTED}"
        )
    raise ConfigError(f"unknown store URL scheme '{scheme}://' in '{url}'; supported: {SUPPORTED}")


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
