"""Published Arrow batches in, stored records out, and stored records back into predictions.

Every backend stores one *record* per key: ``[computed_at_us, value_1, ..., value_n]``, the prediction
values in the version's column order. The memory backend keeps records as tuples; SQLite (and later
Redis, one hash field per key) keeps them as one MessagePack blob each. MessagePack because it keeps what
JSON loses: NaN and infinities stay floats, float64 round-trips bit for bit, int64/uint64 stay exact,
and it is compact and fast: for a timestamp, a label and two probabilities, 31.5 bytes a record
against 62 for JSON, and 1M records encode in 0.09 s with msgspec's MessagePack against 0.16 s with
msgspec's JSON and 1.1 s with orjson (both JSON encoders also write NaN as null, which is wrong here).
`benchmarks/store_bench.py` measures the whole path.

A version published with a `features_key` column (`base.FEATURES_KEY_COLUMN`: the canonical feature key
of each row, 32 hex digits, as `augury batch --key` writes it) keeps it at the end of each record, as its
16 bytes: ``[computed_at_us, value_1, ..., value_n, features_hash]`` (17 bytes more a record; a null
stays None). The version's layout says so (`View.hashed`), so the records of older versions, without
it, are read as they always were.

Batch rules (`InputError` otherwise): a `key` column of strings with no nulls; a `computed_at` column
that is a timestamp (any unit; a zone-naive one is read as UTC; kept to the microsecond) or float unix
seconds, with no nulls; prediction columns of float, int, bool or string type (dictionary-encoded
allowed), nulls allowed (read back as None); every batch with the same prediction columns. A
`model_version` column, if present, must hold the publish's model version on every row. A
`features_key` column, if the first batch has one, is in every batch: strings of 32 hex digits (or
16-byte binary), nulls allowed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from augury.errors import InputError
from augury.store.base import (
    COMPUTED_AT_COLUMN,
    FEATURES_KEY_COLUMN,
    KEY_COLUMN,
    MODEL_VERSION_COLUMN,
    StoredPrediction,
)

_RESERVED = (KEY_COLUMN, COMPUTED_AT_COLUMN, MODEL_VERSION_COLUMN, FEATURES_KEY_COLUMN)

encode_record = msgspec.msgpack.Encoder().encode
"""A record (a tuple ``(computed_at_us, *values)``) as a MessagePack blob."""

decode_record = msgspec.msgpack.Decoder().decode
"""A MessagePack blob back into a record (a list)."""


def _plain_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _is_string(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _supported(t: pa.DataType) -> bool:
    t = _plain_type(t)
    return bool(pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t) or _is_string(t))


def prediction_columns(schema: pa.Schema) -> tuple[str, ...]:
    """The prediction columns of a published batch's schema, in order; checks the reserved columns."""
    names = list(schema.names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"published batch has duplicate column names: {dupes}")
    for required in (KEY_COLUMN, COMPUTED_AT_COLUMN):
        if required not in names:
            raise InputError(f"published batch has no '{required}' column (columns: {names})")
    columns = tuple(n for n in names if n not in _RESERVED)
    for name in columns:
        t = schema.field(name).type
        if not _supported(t):
            raise InputError(f"prediction column '{name}' has type {t}; supported: float, int, bool, string")
    return columns


def features_hashed(schema: pa.Schema) -> bool:
    """Whether a version whose first published batch has `schema` keeps a features hash per record."""
    return FEATURES_KEY_COLUMN in schema.names


@dataclass(frozen=True, slots=True)
class Rows:
    """One batch's rows, as Python lists: keys, computed_at in microseconds, one value list per column,
    and the features hash of each row when the version keeps them."""

    keys: list[str]
    computed_us: list[int]
    values: list[list[Any]]
    hashes: list[bytes | None] | None = None

    def records(self) -> Iterator[tuple[Any, ...]]:
        """The records ``(computed_at_us, *values[, features_hash])``, aligned with `keys`."""
        if self.hashes is not None:
            return zip(self.computed_us, *self.values, self.hashes, strict=True)
        return zip(self.computed_us, *self.values, strict=True)


def batch_rows(batch: pa.RecordBatch, columns: Sequence[str], model_version: str,
               hashed: bool = False) -> Rows:
    """Check one published batch against the version's `columns` (and `hashed`: whether it keeps a
    features hash per record) and convert it to `Rows`."""
    found = prediction_columns(batch.schema)
    if set(found) != set(columns):
        missing = sorted(set(columns) - set(found))
        extra = sorted(set(found) - set(columns))
        raise InputError(
            f"published batches disagree on prediction columns: missing {missing}, "
            f"unexpected {extra} (the first batch had {list(columns)})"
        )
    names = batch.schema.names
    if MODEL_VERSION_COLUMN in names:
        _check_model_version(batch.column(names.index(MODEL_VERSION_COLUMN)), model_version)
    if features_hashed(batch.schema) != hashed:
        raise InputError(f"published batches disagree on the '{FEATURES_KEY_COLUMN}' column: the first batch "
                         f"{'had' if hashed else 'did not have'} one")
    keys = _keys(batch.column(names.index(KEY_COLUMN)))
    computed = computed_at_us(batch.column(names.index(COMPUTED_AT_COLUMN)))
    hashes = _digests(batch.column(names.index(FEATURES_KEY_COLUMN))) if hashed else None
    return Rows(keys, computed, [_values(batch.column(names.index(c))) for c in columns], hashes)


def _decoded(arr: pa.Array) -> pa.Array:
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _keys(arr: pa.Array) -> list[str]:
    arr = _decoded(arr)
    if not _is_string(arr.type):
        raise InputError(f"the '{KEY_COLUMN}' column must hold strings, not {arr.type}")
    if arr.null_count:
        raise InputError(f"the '{KEY_COLUMN}' column has {arr.null_count} null value(s)")
    keys: list[str] = arr.to_pylist()
    return keys


def _digests(arr: pa.Array) -> list[bytes | None]:
    """A `features_key` column as 16-byte digests (None for a null): from 32 hex digits, or binary."""
    arr = _decoded(arr)
    t = arr.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        digests: list[bytes | None] = arr.to_pylist()
    elif _is_string(t):
        try:
            digests = [None if s is None else bytes.fromhex(s) for s in arr.to_pylist()]
        except ValueError as exc:
            raise InputError(f"the '{FEATURES_KEY_COLUMN}' column holds a value that is not hex digits: "
                             f"{exc}") from exc
    else:
        raise InputError(f"the '{FEATURES_KEY_COLUMN}' column must hold 32 hex digits or 16 bytes, not {t}")
    bad = next((d for d in digests if d is not None and len(d) != 16), None)
    if bad is not None:
        raise InputError(f"the '{FEATURES_KEY_COLUMN}' column holds a value of {len(bad)} bytes, not 16 "
                         f"(a canonical feature key is 32 hex digits)")
    return digests


def computed_at_us(arr: pa.Array) -> list[int]:
    """A `computed_at` column (timestamp, or float unix seconds) as integer microseconds since the epoch."""
    if arr.null_count:
        raise InputError(f"the '{COMPUTED_AT_COLUMN}' column has {arr.null_count} null value(s)")
    t = arr.type
    if pa.types.is_timestamp(t):
        us = arr.cast(pa.timestamp("us", tz=t.tz), safe=False).view(pa.int64())
        out: list[int] = us.to_pylist()
        return out
    if pa.types.is_floating(t):
        secs = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64)
        if not np.isfinite(secs).all():
            raise InputError(f"the '{COMPUTED_AT_COLUMN}' column has non-finite values")
        out = np.rint(secs * 1e6).astype(np.int64).tolist()
        return out
    raise InputError(f"the '{COMPUTED_AT_COLUMN}' column must be a timestamp or float unix seconds, not {t}")


def _values(arr: pa.Array) -> list[Any]:
    arr = _decoded(arr)
    if pa.types.is_float16(arr.type):
        arr = arr.cast(pa.float64())
    values: list[Any] = arr.to_pylist()
    return values


def _check_model_version(arr: pa.Array, model_version: str) -> None:
    seen = set(_decoded(arr).cast(pa.string()).unique().to_pylist())
    if seen - {model_version}:
        raise InputError(
            f"the '{MODEL_VERSION_COLUMN}' column holds {sorted(map(str, seen))}, but this "
            f"version is published as model version '{model_version}'"
        )


@dataclass(frozen=True, slots=True)
class View:
    """What a reader needs to know about the active version to answer lookups."""

    store_version: str
    model_version: str
    columns: tuple[str, ...]
    ttl_s: float | None
    #: whether its records end with the features hash (see the module docstring)
    hashed: bool = False

    @property
    def fields(self) -> int:
        """How many fields each of its records has."""
        return len(self.columns) + 1 + self.hashed

    def cutoff_us(self, now: float) -> float | None:
        """Rows computed before this instant (microseconds) are expired; None without a TTL."""
        return None if self.ttl_s is None else (now - self.ttl_s) * 1e6


def to_prediction(
    key: str, record: Sequence[Any], view: View, cutoff_us: float | None
) -> StoredPrediction | None:
    """A stored record as a prediction, or None if its TTL has passed (TTL is enforced on read)."""
    computed = record[0]
    if cutoff_us is not None and computed < cutoff_us:
        return None
    if view.hashed:
        values = dict(zip(view.columns, record[1:-1], strict=True))
        return StoredPrediction(key, values, view.model_version, view.store_version, computed / 1e6,
                                record[-1])
    values = dict(zip(view.columns, record[1:], strict=True))
    return StoredPrediction(key, values, view.model_version, view.store_version, computed / 1e6)


def dump_json(obj: dict[str, Any] | None, what: str) -> str:
    """A version's `profile` or `meta` as JSON text; InputError if it is not a JSON-able dict."""
    if obj is None:
        return "{}"
    if not isinstance(obj, dict):
        raise InputError(f"{what} must be a dict, not {type(obj).__name__}")
    try:
        return json.dumps(obj, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} is not JSON-serialisable: {exc}") from exc


def load_json(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(text)
    return loaded
