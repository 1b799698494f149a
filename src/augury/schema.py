"""Typed schemas and the one cast that every path goes through.

A `Schema` is an ordered tuple of named, typed fields. A model has an input schema (its features) and an
output schema (its prediction columns). `conform` casts any Arrow batch to an input schema: the batch
runner calls it on every chunk, the server on every request, so a float sent as JSON text and the same
float read from Parquet become the same value before anything else happens (DESIGN.md, invariant 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augury.errors import ConfigError, SchemaError

#: dtype names accepted in schemas and manifests, and their Arrow types.
DTYPES: Mapping[str, pa.DataType] = {
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
_ALIASES = {
    "float": "float64",
    "double": "float64",
    "int": "int64",
    "str": "string",
    "boolean": "bool",
    "text": "string",
    "object": "string",
    "large_string": "string",
}


def dtype_name(name: str) -> str:
    """The canonical dtype name for `name` (aliases such as 'float' or 'str' accepted)."""
    canonical = _ALIASES.get(name, name)
    if canonical not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return canonical


@dataclass(frozen=True)
class Field:
    """One named, typed column. `allow_missing`: nulls and NaN are valid values (they reach the model as
    NaN)."""

    name: str
    dtype: str
    allow_missing: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "allow_missing": self.allow_missing}


@dataclass(frozen=True)
class Schema:
    """An ordered set of fields; order matters (it is the model's feature order and the key's hash order)."""

    fields: tuple[Field, ...]
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"schema has duplicate field names: {', '.join(duplicates)}")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    @classmethod
    def of(cls, fields: Iterable[Field | tuple[str, str]]) -> Schema:
        return cls(tuple(f if isinstance(f, Field) else Field(f[0], dtype_name(f[1])) for f in fields))

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def __len__(self) -> int:
        return len(self.fields)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> Field:
        return self.fields[self._index[name]]

    def to_arrow(self) -> pa.Schema:
        return pa.schema([pa.field(f.name, f.arrow_type) for f in self.fields])

    def to_list(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self.fields]

    @classmethod
    def from_list(cls, items: Sequence[Mapping[str, Any]]) -> Schema:
        try:
            return cls(
                tuple(
                    Field(str(d["name"]), dtype_name(str(d["dtype"])), bool(d.get("allow_missing", False)))
                    for d in items
                )
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"bad schema entry: {exc}") from exc

    def is_numeric(self) -> bool:
        return all(f.dtype != "string" for f in self.fields)


@dataclass(frozen=True)
class RowError:
    """A row that cannot be scored: its index in the batch it came from, and why."""

    index: int
    reason: str


@dataclass(frozen=True)
class Conformed:
    """The result of `conform`: the scorable rows cast to the schema, their indices, and the rejected rows."""

    batch: pa.RecordBatch
    indices: np.ndarray
    errors: list[RowError]


def conform(batch: pa.RecordBatch | pa.Table, schema: Schema) -> Conformed:
    """Cast `batch` to `schema`, keeping only the schema's columns in schema order.

    A column missing from `batch` is a `SchemaError` (nothing in the batch can be scored). A value that
    cannot be cast, a null, or a NaN where the field does not allow missing values rejects only its row,
    reported in `errors` with the reason; `indices` says which input rows `batch` holds.
    """
    if isinstance(batch, pa.Table):
        batch = (
            batch.combine_chunks().to_batches()[0]
            if batch.num_rows
            else pa.RecordBatch.from_pylist([], schema=batch.schema)
        )
    missing = [n for n in schema.names if n not in batch.schema.names]
    if missing:
        raise SchemaError(
            f"missing feature column(s): {', '.join(missing)} (the model expects {', '.join(schema.names)})"
        )
    n = batch.num_rows
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    columns: list[pa.Array] = []
    for f in schema.fields:
        col, col_bad, col_reasons = _cast_column(batch.column(f.name), f)
        for i, r in col_reasons.items():
            reasons.setdefault(i, r)
        bad |= col_bad
        columns.append(col)
    out = pa.RecordBatch.from_arrays(columns, schema=schema.to_arrow())
    if not bad.any():
        return Conformed(out, np.arange(n), [])
    keep = np.flatnonzero(~bad)
    errors = [RowError(int(i), reasons[int(i)]) for i in np.flatnonzero(bad)]
    return Conformed(out.take(pa.array(keep)), keep, errors)


def _cast_column(col: pa.Array, f: Field) -> tuple[pa.Array, np.ndarray, dict[int, str]]:
    n = len(col)
    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, str] = {}
    target = f.arrow_type
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if col.type == target:
        cast = col
    else:
        try:
            cast = pc.cast(col, target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            cast = _cast_per_value(col, f, bad, reasons)
    if cast.null_count:
        nulls = np.asarray(cast.is_null().to_numpy(zero_copy_only=False), dtype=bool) & ~bad
        if f.allow_missing and pa.types.is_floating(target):
            cast = pc.fill_null(cast, float("nan"))
        elif nulls.any():
            for i in np.flatnonzero(nulls):
                reasons.setdefault(int(i), f"feature {f.name!r} is missing")
            bad |= nulls
            cast = pc.fill_null(cast, _placeholder(f.dtype))
    if pa.types.is_floating(target) and not f.allow_missing:
        nans = np.isnan(cast.to_numpy(zero_copy_only=False)) & ~bad
        if nans.any():
            for i in np.flatnonzero(nans):
                reasons.setdefault(
                    int(i), f"feature {f.name!r} is NaN and the model does not accept missing values"
                )
            bad |= nans
    return cast, bad, reasons


def _placeholder(dtype: str) -> Any:
    return {"string": "", "bool": False}.get(dtype, 0)


def _cast_per_value(col: pa.Array, f: Field, bad: np.ndarray, reasons: dict[int, str]) -> pa.Array:
    values: list[Any] = []
    for i, v in enumerate(col.to_pylist()):
        try:
            values.append(cast_value(v, f.dtype))
        except (TypeError, ValueError):
            bad[i] = True
            reasons[i] = f"feature {f.name!r}: cannot read {v!r} as {f.dtype}"
            values.append(_placeholder(f.dtype))
    return pa.array(values, type=f.arrow_type)


def cast_value(v: Any, dtype: str) -> Any:
    """Cast one Python value to `dtype` the way Arrow would; None stays None. Raises ValueError/TypeError."""
    if v is None:
        return None
    if dtype == "string":
        if isinstance(v, str):
            return v
        if isinstance(v, bool | int | float):
            return str(v)
        raise TypeError(v)
    if dtype == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
            return v.strip().lower() in ("true", "1")
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise ValueError(v)
    if isinstance(v, bool):
        raise TypeError(v)
    if dtype.startswith("int"):
        if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
            raise ValueError(v)
        return int(v)
    if isinstance(v, str | int | float):
        return float(v)
    raise TypeError(v)


def cast_row(obj: Mapping[str, Any], schema: Schema, *, ignore_unknown: bool = False) -> list[Any]:
    """Cast one example (a mapping of feature name to JSON-like value) to `schema`, in schema order.

    The same rules as `conform`, for one row without Arrow's per-call overhead: the server's path. A
    missing feature, an unknown field (unless `ignore_unknown`), a value that cannot be cast, or a null or
    NaN where the field does not allow missing values raises SchemaError naming the field."""
    if not ignore_unknown:
        unknown = [k for k in obj if k not in schema]
        if unknown:
            raise SchemaError(
                f"unknown field(s): {', '.join(map(str, unknown))} "
                f"(the model's features are {', '.join(schema.names)})"
            )
    row: list[Any] = []
    for f in schema.fields:
        if f.name not in obj:
            raise SchemaError(f"missing feature {f.name!r}")
        v = obj[f.name]
        try:
            v = cast_value(v, f.dtype)
        except (TypeError, ValueError, OverflowError):
            raise SchemaError(f"feature {f.name!r}: cannot read {v!r} as {f.dtype}") from None
        if f.dtype == "float32" and v is not None:
            v = float(np.float32(v))
        elif f.dtype.startswith("int") and v is not None and not -(2**63) <= v < 2**63:
            raise SchemaError(f"feature {f.name!r}: {v} does not fit in {f.dtype}")
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if not f.allow_missing:
                raise SchemaError(
                    f"feature {f.name!r} is {'missing' if v is None else 'NaN'} and the model "
                    f"does not accept missing values"
                )
            if pa.types.is_floating(f.arrow_type):
                v = math.nan
            elif v is None:
                raise SchemaError(f"feature {f.name!r} is missing")
        row.append(v)
    return row


def rows_to_batch(rows: Sequence[Sequence[Any]], schema: Schema) -> pa.RecordBatch:
    """Rows produced by `cast_row` as one Arrow batch (column by column: one call per feature)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema.fields]
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=f.arrow_type) for col, f in zip(columns, schema.fields, strict=True)],
        schema=schema.to_arrow(),
    )
