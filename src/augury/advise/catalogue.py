"""Reading the catalogue sample (DATA): its rows cast to the model's schema, and its keys.

Rows are read and keyed as `augury batch` reads and keys them (`open_source`, `conform`, `column_keys`
or `feature_keys`), so the keys here are the keys a store built by `augury batch` + `augury publish`
would hold. Rows the model cannot take (a bad value, a null key) are counted and left out.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from augury.batch.sources import Source, open_source, read_task
from augury.errors import InputError
from augury.keys import column_keys, feature_keys
from augury.schema import Schema, conform

#: rows per chunk while reading inputs.
CHUNK_ROWS = 32_768
#: rows of the sample kept in memory for measuring the model and the store.
KEEP_ROWS = 20_000
#: keys of the sample held for matching the traffic log (rows past it are counted, not held).
MAX_KEYS = 2_000_000


@dataclass
class Catalogue:
    """The sample: its first `KEEP_ROWS` scorable rows (`rows`, conformed) with their store keys
    (`keys`), and the keys of every row read, by key column(s) and by feature hash."""

    rows: pa.RecordBatch
    keys: list[str]
    key_set: set[str] = field(default_factory=set)
    hash_set: set[str] = field(default_factory=set)
    rows_read: int = 0
    rejected: int = 0
    first_problem: str | None = None

    @property
    def held_all(self) -> bool:
        return self.rows_read - self.rejected <= MAX_KEYS


def batches(source: Source) -> Iterator[pa.RecordBatch]:
    """Every row of `source`, chunk by chunk, in input order (bad CSV/JSON lines are skipped)."""
    for task in source.tasks():
        yield from read_task(task, source.columns, source.chunk_rows)


def open_input(path: str | os.PathLike[str], columns: Sequence[str], role: str) -> Source:
    """`open_source`, its errors saying which of the advisor's inputs they are about (`role`: "the
    sample DATA", "the traffic log"): batch's own name the file, not what it is for here."""
    try:
        return open_source(path, columns, CHUNK_ROWS)
    except InputError as exc:
        raise type(exc)(f"{role}: {exc}") from exc


def read_catalogue(path: str | os.PathLike[str], schema: Schema, key_columns: Sequence[str], *,
                   hashes: bool = True) -> Catalogue:
    """Read the sample at `path`; with key columns, hold the feature-hash keys too only if `hashes`
    (a traffic log without the key columns is matched by them). InputError for an unreadable input, a
    missing column, or no scorable row; SchemaError (an InputError) for a missing feature column."""
    keys = list(key_columns)
    columns = list(dict.fromkeys([*keys, *schema.names]))
    source = open_input(path, columns, "the sample DATA")
    kept: list[pa.RecordBatch] = []
    kept_keys: list[str] = []
    kept_rows = 0
    out = Catalogue(pa.RecordBatch.from_pylist([], schema=schema.to_arrow()), [])
    try:
        for batch in batches(source):
            out.rows_read += batch.num_rows
            if not batch.num_rows:
                continue
            conformed = conform(batch, schema)
            good = batch.take(pa.array(conformed.indices)) if conformed.errors else batch
            ok = np.ones(good.num_rows, dtype=bool)
            for c in keys:
                col = good.column(c)
                if col.null_count:
                    ok &= ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            rejected = len(conformed.errors) + int((~ok).sum())
            if rejected and out.first_problem is None:
                out.first_problem = (conformed.errors[0].reason if conformed.errors
                                     else f"a row has no value in key column {keys}")
            out.rejected += rejected
            rows = conformed.batch
            if not ok.all():
                mask = pa.array(ok)
                good, rows = good.filter(mask), rows.filter(mask)
            if not rows.num_rows:
                continue
            feature_hashes = feature_keys(rows, schema)
            primary = column_keys(good, keys) if keys else feature_hashes
            room = MAX_KEYS - len(out.key_set)
            if room > 0:
                out.key_set.update(primary.slice(0, room).to_pylist())
                if keys and hashes:
                    out.hash_set.update(feature_hashes.slice(0, room).to_pylist())
            if kept_rows < KEEP_ROWS:
                take = min(rows.num_rows, KEEP_ROWS - kept_rows)
                kept.append(rows.slice(0, take))
                kept_keys.extend(primary.slice(0, take).to_pylist())
                kept_rows += take
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    if not keys:
        out.hash_set = out.key_set
    if not kept_rows:
        why = f" (first problem: {out.first_problem})" if out.first_problem else ""
        raise InputError(f"the sample {path} has no row the model can score{why}")
    table = pa.Table.from_batches(kept, schema=kept[0].schema).combine_chunks()
    out.rows, out.keys = table.to_batches()[0], kept_keys
    return out
