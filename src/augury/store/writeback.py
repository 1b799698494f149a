"""Write-back rows: checking them, and the SQLite table that keeps them beside the versions.

A written-back prediction is one row per (key, model version): its output values, when it was computed
and when it expires (see `base`, "Write-back"). Both backends check rows the same way (`checked`); the
SQLite backend keeps them in one table of the store file,

    augury_writeback(key, model_version, computed_at_us, expires_at_us, v)  PRIMARY KEY (key, model_version)

(``WITHOUT ROWID``: a lookup is one B-tree descent; an index on ``expires_at_us`` makes pruning a range
delete), created by the first write-back, so a store that never gets one is left as it was. ``v`` is the
values as one MessagePack map (floats to the bit), or, for a row that knows the hash of the features it
was computed from, the array ``[values, features_hash]`` (16 bytes): the rows written before that are
read as they were. Expiry is enforced on read: a row past its
``expires_at_us`` is never returned, whether or not it has been pruned yet.
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import msgspec

from augury.errors import InputError
from augury.store.base import WrittenBack

TABLE = "augury_writeback"
_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT NOT NULL, model_version TEXT NOT NULL, "
    "computed_at_us INTEGER NOT NULL, expires_at_us INTEGER NOT NULL, v BLOB NOT NULL, "
    "PRIMARY KEY (key, model_version)) WITHOUT ROWID",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expiry ON {TABLE} (expires_at_us)",
)
_UPSERT = f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, ?, ?, ?)"
#: the most keys one SELECT binds (besides the model version and the time).
CHUNK = 256

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(dict[str, Any] | tuple[dict[str, Any], bytes]).decode


def checked(rows: Sequence[WrittenBack]) -> list[WrittenBack]:
    """`rows` as a list, each checked (InputError naming the first bad one), values copied."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, WrittenBack):
            raise InputError(f"write-back row {i} is a {type(row).__name__}, not a WrittenBack")
        if not row.key or not row.model_version:
            raise InputError(f"write-back row {i} has an empty key or model version")
        if not (math.isfinite(row.computed_at) and math.isfinite(row.expires_at)):
            raise InputError(f"write-back row {i} (key {row.key!r}) has a non-finite time")
        if not isinstance(row.values, dict) or not row.values:
            raise InputError(f"write-back row {i} (key {row.key!r}) has no values")
        if row.features_hash is not None and (not isinstance(row.features_hash, bytes)
                                              or len(row.features_hash) != 16):
            raise InputError(f"write-back row {i} (key {row.key!r}) has a features hash that is not 16 bytes")
        out.append(WrittenBack(row.key, dict(row.values), row.model_version, row.computed_at,
                               row.expires_at, row.features_hash))
    return out


def encoded(rows: Sequence[WrittenBack]) -> list[tuple[str, str, int, int, bytes]]:
    """Checked rows as the table's parameters (InputError for values MessagePack cannot hold)."""
    out = []
    for row in checked(rows):
        try:
            blob = _encode(row.values if row.features_hash is None else (row.values, row.features_hash))
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError(f"write-back row for key {row.key!r} has values that cannot be stored: "
                             f"{exc}") from exc
        out.append((row.key, row.model_version, micros(row.computed_at), micros(row.expires_at), blob))
    return out


def micros(ts: float) -> int:
    """Unix seconds as whole microseconds, rounded as `base.iso` rounds them (the fraction alone), so a
    time read back prints exactly as it did before it was stored."""
    fraction, whole = math.modf(ts)
    return int(whole) * 1_000_000 + round(fraction * 1e6)


def write(con: sqlite3.Connection, params: list[tuple[str, str, int, int, bytes]]) -> None:
    """Insert or replace the rows, in the caller's write transaction (creating the table if need be)."""
    for ddl in _DDL:
        con.execute(ddl)
    con.executemany(_UPSERT, params)


def read(con: sqlite3.Connection, keys: Sequence[str], model_version: str,
         now: float) -> list[WrittenBack | None]:
    """The unexpired rows of `keys` made by `model_version`, aligned with `keys` (none before the first
    write-back made the table)."""
    found: dict[str, WrittenBack] = {}
    unique = list(dict.fromkeys(keys))
    now_us = now * 1e6
    try:
        for start in range(0, len(unique), CHUNK):
            chunk = unique[start:start + CHUNK]
            size = 1 << (len(chunk) - 1).bit_length()  # a power of two: a handful of statements to prepare
            padded = chunk + [chunk[-1]] * (size - len(chunk))
            for key, computed_us, expires_us, blob in con.execute(_select(size), (model_version, now_us,
                                                                                   *padded)):
                v = _decode(blob)
                values, digest = (v, None) if isinstance(v, dict) else v
                found[key] = WrittenBack(key, values, model_version, computed_us / 1e6, expires_us / 1e6,
                                         digest)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
    except msgspec.DecodeError as exc:
        raise sqlite3.DatabaseError(f"a written-back row is corrupt: {exc}") from exc
    return [found.get(key) for key in keys]


@functools.lru_cache(maxsize=16)
def _select(size: int) -> str:
    return (f"SELECT key, computed_at_us, expires_at_us, v FROM {TABLE} WHERE model_version = ? "
            f"AND expires_at_us > ? AND key IN ({','.join('?' * size)})")


def prune(con: sqlite3.Connection, now: float) -> int:
    """Delete the expired rows, in the caller's write transaction; how many."""
    try:
        return con.execute(f"DELETE FROM {TABLE} WHERE expires_at_us <= ?", (now * 1e6,)).rowcount
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return 0
