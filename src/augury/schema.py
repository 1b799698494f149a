"""Typed schemas and the one cast that every path goes through.

A `Schema` is an ordered tuple of named, typed fields. A model has an input schema (its features) and an
output schema (its prediction columns). Every input is cast to the model's input schema before anything
else happens, so a float sent as JSON text and the same float read from Parquet become the same value
(DESIGN.md, invariant 1). Where that invariant lives:

- `cast_value`: the rules for one value (what text, number or bool each dtype accepts, and what it
  becomes). `cast_row` applies it to one JSON object, then `conform`'s null and NaN rules, with
  `conform`'s reasons: the server's path (through `serve.casting.RowCaster`, which returns the row
  unchanged where `cast_row` would and calls it otherwise).
- `conform`: a batch (the batch runner's chunks, verify's golden rows, advise's samples). Arrow casts a
  column when it can; a column Arrow cannot cast, or would cast more leniently than `cast_value`
  (`_arrow_is_lenient`: hexadecimal text for an int, a number other than 0 or 1 for a bool, a bool for a
  number), is cast value by value with `cast_value`.

Arrow's vectorised cast and `cast_value` are two implementations of one rule, pinned equal by
tests/test_schema.py: an edge-case table (NaN, infinities, -0.0, ints past int32, 2**53 and int64,
floats for ints, text with digits and spaces, bools for numbers and numbers for bools, nulls, unicode,
empty text) over every dtype, and property tests drawing values and whole batches, holding `conform`,
`cast_row` and `RowCaster` to the same values bit for bit, the same rejections with the same reasons,
and the same keys (`keys.feature_keys` of the batch, `keys.RowKeys` of the server's rows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
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
    elif _arrow_is_lenient(col, target):
        cast = _cast_per_value(col, f, bad, reasons)
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
                reasons.setdefault(int(i), _missing(f))
            bad |= nulls
            cast = pc.fill_null(cast, _placeholder(f.dtype))
    if pa.types.is_floating(target) and not f.allow_missing:
        nans = np.isnan(cast.to_numpy(zero_copy_only=False)) & ~bad
        if nans.any():
            for i in np.flatnonzero(nans):
                reasons.setdefault(int(i), _nan(f))
            bad |= nans
    return cast, bad, reasons


def _placeholder(dtype: str) -> Any:
    return {"string": "", "bool": False}.get(dtype, 0)


def _missing(f: Field) -> str:
    return f"feature {f.name!r} is missing"


def _nan(f: Field) -> str:
    return f"feature {f.name!r} is NaN and the model does not accept missing values"


def _unreadable(f: Field, v: Any) -> str:
    return f"feature {f.name!r}: cannot read {v!r} as {f.dtype}"


def _arrow_is_lenient(col: pa.Array, target: pa.DataType) -> bool:
    """Whether Arrow's cast of `col` to `target` would accept a value that `cast_value` rejects: text in
    hexadecimal for an int (Arrow reads "0x..." as the bits, so "0xFFFFFFFFFFFFFFFF" is -1), a number
    other than 0 and 1 for a bool (Arrow makes any non-zero number, NaN included, true), or a bool for a
    number (Arrow makes it 1 or 0). Such a column is cast value by value."""
    numeric = pa.types.is_integer(target) or pa.types.is_floating(target)
    if numeric and pa.types.is_boolean(col.type):
        return True
    if pa.types.is_integer(target) and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return bool(pc.any(pc.match_substring_regex(col, "^0[xX]")).as_py())
    if pa.types.is_boolean(target) and (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        zero, one = pa.scalar(0, col.type), pa.scalar(1, col.type)
        return bool(pc.any(pc.invert(pc.or_(pc.equal(col, zero), pc.equal(col, one)))).as_py())
    return False


def _cast_per_value(col: pa.Array, f: Field, bad: np.ndarray, reasons: dict[int, str]) -> pa.Array:
    values: list[Any] = []
    for i, v in enumerate(col.to_pylist()):
        try:
            values.append(cast_value(v, f.dtype))
        except (TypeError, ValueError, OverflowError):
            bad[i] = True
            reasons[i] = _unreadable(f, v)
            values.append(_placeholder(f.dtype))
    return pa.array(values, type=f.arrow_type)


#: the values an int dtype holds: lo <= v < hi.
INT_RANGES: Mapping[str, tuple[int, int]] = {"int64": (-(2**63), 2**63), "int32": (-(2**31), 2**31)}
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}
#: the float64 values from which float32 rounds to infinity (round half to even, at 2**128 - 2**103).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


def cast_value(v: Any, dtype: str) -> Any:
    """Cast one Python value to `dtype` as `conform` casts a column holding it; None stays None. Raises
    ValueError, TypeError or OverflowError when it cannot.

    `conform` lets Arrow cast a column when Arrow can and comes here, value by value, when it cannot, so
    this accepts what either accepts, with Arrow's value where both do, except where Arrow is lenient
    (`_arrow_is_lenient`: then `conform` comes here for the whole column). tests/test_schema.py holds
    the two to one answer. The rules: text is read by Python's `int`/`float` (Arrow reads no more, and the
    same number), not in hexadecimal; a bool is not a number; only 0 and 1 (and their texts, and "true"
    and "false") are bools; an int must fit its dtype; a float32 is rounded once, from the text or the
    float64 (overflowing to infinity, as Arrow does); a number's text is as Arrow writes it ("2", not
    "2.0"; "true", not "True").
    """
    if v is None:
        return None
    if dtype == "string":
        if isinstance(v, str):
            return v
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):  # Arrow's shortest round-trip text, which is not Python's
            return pc.cast(pa.array([v], type=pa.float64()), pa.string())[0].as_py()
        raise TypeError(v)
    if dtype == "bool":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _BOOL_TEXT:
            return _BOOL_TEXT[v.strip().lower()]
        if isinstance(v, int | float) and v in (0, 1):
            return bool(v)
        raise ValueError(v)
    if isinstance(v, bool):  # a bool is not a number (Arrow would make it 1 or 0)
        raise TypeError(v)
    if dtype in INT_RANGES:
        if isinstance(v, float) and (not math.isfinite(v) or v != int(v)):
            raise ValueError(v)
        if not isinstance(v, str | int | float):
            raise TypeError(v)
        n = int(v)
        lo, hi = INT_RANGES[dtype]
        if not lo <= n < hi:
            raise ValueError(f"{v!r} does not fit in {dtype}")
        return n
    if not isinstance(v, str | int | float):
        raise TypeError(v)
    x = float(v)
    if dtype == "float32":
        return _float32(x, v if isinstance(v, str) else None)
    return x


def _float32(x: float, text: str | None) -> float:
    """`x` rounded to float32; from `text` (which `x` was read from) when rounding `x` is not rounding
    the number the text means (double rounding: Arrow reads text to float32 directly)."""
    if not math.isfinite(x):
        return x
    rounded = math.copysign(math.inf, x) if abs(x) >= _FLOAT32_OVERFLOW else float(np.float32(x))
    if text is None or rounded == x:
        return rounded
    # Python reads more forms than Arrow (spaces, underscores, other digits): give Arrow the number
    try:
        exact = str(Decimal(text.strip()))
        return float(pc.cast(pa.array([exact]), pa.float32(), safe=True)[0].as_py())
    except (InvalidOperation, pa.ArrowInvalid):  # not met: Decimal and Arrow read what float() reads
        return rounded


def cast_row(obj: Mapping[str, Any], schema: Schema, *, ignore_unknown: bool = False) -> list[Any]:
    """Cast one example (a mapping of feature name to JSON-like value) to `schema`, in schema order.

    `conform`'s cast for one row, without Arrow's per-call overhead: the server's path. Every value goes
    through `cast_value`, then the null and NaN rules of `conform`; a rejected value raises SchemaError
    with the reason `conform` gives its row. A missing feature or an unknown field (unless
    `ignore_unknown`) raises SchemaError too (`conform` keeps only the schema's columns and fails the
    whole batch when one is missing)."""
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
            raise SchemaError(_unreadable(f, v)) from None
        if v is None:
            if not (f.allow_missing and f.dtype in _FLOATS):
                raise SchemaError(_missing(f))
            v = math.nan
        elif v != v:  # NaN
            if not f.allow_missing:
                raise SchemaError(_nan(f))
            v = math.nan
        row.append(v)
    return row


_FLOATS = frozenset({"float64", "float32"})


def rows_to_batch(rows: Sequence[Sequence[Any]], schema: Schema) -> pa.RecordBatch:
    """Rows produced by `cast_row` as one Arrow batch (column by column: one call per feature)."""
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema.fields]
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=f.arrow_type) for col, f in zip(columns, schema.fields, strict=True)],
        schema=schema.to_arrow(),
    )
