"""Request times in a traffic log, as Unix seconds (float64), whatever way the log wrote them."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augury.errors import InputError


def seconds_of(col: pa.Array | pa.ChunkedArray, what: str) -> np.ndarray:
    """Unix seconds of a timestamp column: Arrow timestamps or dates; numbers as Unix seconds (values
    past 1e11 are read as milliseconds, past 1e14 as microseconds); text as one of those numbers or ISO
    8601 (a time without a zone is UTC). InputError naming `what` for an empty or unreadable value."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.null_count:
        raise InputError(f"{what} has {col.null_count} empty value(s); every request needs its time")
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.dictionary_decode(), t.value_type
    if pa.types.is_date(t):
        col, t = col.cast(pa.timestamp("s")), pa.timestamp("s")
    if pa.types.is_timestamp(t):
        us = col.cast(pa.timestamp("us", tz=t.tz), safe=False).view(pa.int64())
        return np.asarray(us.to_numpy(zero_copy_only=False), dtype=np.float64) / 1e6
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _scaled(np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64), what)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return _scaled(np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)), what)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.fromiter((_iso(v, what) for v in col.to_pylist()), dtype=np.float64, count=len(col))
    raise InputError(f"{what} holds {t} values; give times as timestamps, ISO 8601 text or Unix seconds")


def _scaled(x: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(x).all():
        raise InputError(f"{what} has values that are not finite numbers")
    typical = float(np.median(np.abs(x))) if len(x) else 0.0
    if typical > 1e14:
        return x / 1e6
    if typical > 1e11:
        return x / 1e3
    return x


def _iso(text: str, what: str) -> float:
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(f"{what}: cannot read {text!r} as a time (ISO 8601 or Unix seconds)") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
