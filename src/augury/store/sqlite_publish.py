"""The SQLite store's publish steps, on the writer connection (the caller holds the store's write lock).

1. `register`: one transaction inserts the version row as 'loading', creates its empty table, and takes
   the version's publish lease (`lease`), so a crash from here on leaves a visible orphan;
2. `load`: one transaction bulk-inserts every row (multi-row ``INSERT`` statements through
   `executemany`), builds the unique key index (a duplicate key fails it: InputError), marks the version
   ready and, if asked, switches the pointer: a single ``UPDATE``, so readers see the old version or the
   new one;
3. if anything in 2 fails (bad input, an exception from the batches), the caller rolls back and deletes
   the partial version (`discard`) before the error propagates; a crash (kill -9) rolls back 2 and leaves
   the registered version as an ORPHAN, which `gc` deletes. The previous active version is untouched
   either way.

Rows are appended to a plain rowid table and the unique index is built afterwards, which SQLite does with
an external sort: this measured faster than inserting into a ``WITHOUT ROWID`` table, even pre-sorted,
and needs no sort in Python (`benchmarks/store_bench.py --variants` measures the alternatives).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from augury.errors import InputError
from augury.store.codec import batch_rows, dump_json, encode_record
from augury.store.lease import Lease, lease_path
from augury.store.sqlite_schema import layout, table

log = logging.getLogger(__name__)

#: rows per multi-row INSERT statement during a bulk load (2 parameters each).
INSERT_ROWS = 128


def register(con: sqlite3.Connection, path: str, model_version: str, columns: tuple[str, ...],
             ttl_s: float | None, profile_json: str, meta_json: str,
             hashed: bool = False, parts: bool = False) -> tuple[int, Lease]:
    """Step 1: the new version's number, registered as 'loading' with its empty table, and its lease.
    `hashed`: its records end with a features hash (`codec`), said in its layout (`sqlite_schema`).
    `parts` (a publish in parts, `sqlite_parts`): the layout is left to the first batch written
    (``pending``), and the key index is made now, so that each part's duplicate keys are found as it is
    written."""
    con.execute("BEGIN IMMEDIATE")
    lease: Lease | None = None
    try:
        number: int = con.execute(
            "INSERT INTO augury_versions (model_version, created_at, state, row_count, columns, ttl_s, "
            "profile, meta) VALUES (?, ?, 'loading', 0, ?, ?, ?, ?) RETURNING id",
            (
                model_version,
                time.time(),
                dump_json(layout(columns, hashed) | ({"pending": True} if parts else {}), "columns"),
                ttl_s,
                profile_json,
                meta_json,
            ),
        ).fetchone()[0]
        con.execute(f"CREATE TABLE {table(number)} (key TEXT NOT NULL, v BLOB NOT NULL)")
        if parts:
            con.execute(f"CREATE UNIQUE INDEX {table(number)}_key ON {table(number)} (key)")
        lease = Lease(lease_path(path, number))
        con.execute("COMMIT")
    except BaseException:
        rollback(con)
        if lease is not None:
            lease.release()
        raise
    return number, lease


def load(con: sqlite3.Connection, number: int, first: pa.RecordBatch | None, rest: Iterator[pa.RecordBatch],
         columns: tuple[str, ...], model_version: str, activate: bool, hashed: bool = False) -> None:
    """Step 2: every row, the key index, 'ready', and the pointer if `activate`, in one transaction (left
    open if it fails: the caller rolls it back)."""
    name = table(number)
    total = 0
    con.execute("BEGIN IMMEDIATE")
    batch = first
    while batch is not None:
        rows = batch_rows(batch, columns, model_version, hashed)
        total += insert(con, name, rows.keys, list(map(encode_record, rows.records())))
        batch = next(rest, None)
    try:
        con.execute(f"CREATE UNIQUE INDEX {name}_key ON {name} (key)")
    except sqlite3.IntegrityError:
        dup = con.execute(f"SELECT key FROM {name} GROUP BY key HAVING count(*) > 1 LIMIT 1").fetchone()
        raise InputError(
            f"key '{dup[0] if dup else '?'}' appears more than once in the published rows"
        ) from None
    con.execute("UPDATE augury_versions SET state = 'ready', row_count = ? WHERE id = ?", (total, number))
    if activate:
        con.execute("UPDATE augury_pointer SET active = ? WHERE id = 1", (number,))
    con.execute("COMMIT")


def insert(con: sqlite3.Connection, name: str, keys: list[str], blobs: list[bytes]) -> int:
    """Insert the records `blobs` of `keys` into table `name`, `INSERT_ROWS` rows a statement, in the
    open transaction; how many."""
    n = len(blobs)
    full = n - n % INSERT_ROWS
    if full:
        step = 2 * INSERT_ROWS
        flat: list[Any] = [None] * (2 * full)
        flat[0::2] = keys[:full]
        flat[1::2] = blobs[:full]
        con.executemany(_insert_many(name), [flat[i : i + step] for i in range(0, 2 * full, step)])
    if n > full:
        con.executemany(f"INSERT INTO {name} (key, v) VALUES (?,?)",
                        zip(keys[full:], blobs[full:], strict=True))
    return n


@functools.lru_cache(maxsize=64)
def _insert_many(name: str) -> str:
    return f"INSERT INTO {name} (key, v) VALUES " + ",".join(["(?,?)"] * INSERT_ROWS)


def discard(con: sqlite3.Connection, number: int) -> None:
    """Step 3: delete a failed publish's partial version (sqlite3.Error if even that fails)."""
    con.execute("BEGIN IMMEDIATE")
    con.execute(f"DROP TABLE IF EXISTS {table(number)}")
    con.execute("DELETE FROM augury_versions WHERE id = ?", (number,))
    con.execute("COMMIT")


def rollback(con: sqlite3.Connection) -> None:
    """Roll back an open transaction while another error propagates; a failure here is logged, so it
    never hides the error that caused it."""
    if not con.in_transaction:
        return
    try:
        con.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.warning("rolling back a failed store transaction failed too: %s", exc)
