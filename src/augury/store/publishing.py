"""Argument checks and batch iteration shared by every backend's `publish`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import pyarrow as pa

from augury.errors import InputError


def check_publish_args(model_version: str, ttl_s: float | None) -> None:
    """InputError for an empty model version or a TTL that is not a positive finite number of seconds."""
    if not isinstance(model_version, str) or not model_version:
        raise InputError(f"model_version must be a non-empty string, not {model_version!r}")
    if ttl_s is None:
        return
    number = isinstance(ttl_s, int | float) and not isinstance(ttl_s, bool)
    if not number or not math.isfinite(ttl_s) or ttl_s <= 0:
        raise InputError(f"ttl_s must be a positive number of seconds, not {ttl_s!r}")


def iter_batches(batches: Iterable[pa.RecordBatch] | pa.RecordBatch | pa.Table) -> Iterator[pa.RecordBatch]:
    """The published record batches, skipping empty ones after the first (which fixes the columns).

    A single RecordBatch or a Table is accepted as a convenience; anything else is an InputError."""
    if isinstance(batches, pa.RecordBatch | pa.Table):
        batches = [batches]
    first = True
    for item in batches:
        parts = item.to_batches() if isinstance(item, pa.Table) else [item]
        if isinstance(item, pa.Table) and not parts:
            parts = [pa.RecordBatch.from_pylist([], schema=item.schema)]
        for batch in parts:
            if not isinstance(batch, pa.RecordBatch):
                raise InputError(f"publish takes Arrow record batches, not {type(batch).__name__}")
            if first or batch.num_rows:
                first = False
                yield batch
