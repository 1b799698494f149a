"""`RowCaster`: `schema.cast_row` for one schema, with the checks worked out once instead of per value.

`cast_row` asks, for every value, what the field's dtype is and what the value's type is (about 0.5 µs
a feature). A request's values are nearly always already of their field's JSON type (a float for a
float64 feature, a string for a string one...), and for those the cast changes nothing: `RowCaster`
checks exactly that, with one type test per value (and, for an int, that it fits its dtype), and hands
every other row (an int for a float feature, a string to parse, a NaN, a null, a missing or unknown
field, a float32 feature) to `cast_row` itself. So the result, or the error, is always `cast_row`'s,
which is `schema.conform`'s (DESIGN.md, invariant 1): tests/serve/test_casting.py holds `RowCaster` to
`cast_row`, and tests/test_schema.py holds all three to one table of edge cases and to drawn values.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from typing import Any

from augury.schema import INT_RANGES, Schema, cast_row

#: the Python type a JSON value already has when it needs no cast, by dtype (float32 always casts).
_AS_IS: dict[str, type] = {"float64": float, "int64": int, "int32": int, "bool": bool, "string": str}
_FLOAT = {float}


class RowCaster:
    """``caster(obj, ignore_unknown)`` == ``cast_row(obj, schema, ignore_unknown=ignore_unknown)``."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._names = tuple(schema.names)
        self._types = tuple(_AS_IS.get(f.dtype) for f in schema.fields)
        self._floats_only = all(t is float for t in self._types)
        #: for an int field, the range of values it holds (`INT_RANGES`); None for the others
        self._ranges = tuple(INT_RANGES.get(f.dtype) for f in schema.fields)
        #: the distinct dtypes of the schema's fields.
        self.dtypes = frozenset(f.dtype for f in schema.fields)

    def __call__(self, obj: Mapping[str, Any], ignore_unknown: bool = False) -> list[Any]:
        names = self._names
        if not ignore_unknown and len(obj) != len(names):  # an unknown or a missing field
            return cast_row(obj, self.schema, ignore_unknown=ignore_unknown)
        try:
            row = [obj[name] for name in names]  # with as many keys as fields: no unknown field
        except KeyError:
            return cast_row(obj, self.schema, ignore_unknown=ignore_unknown)
        if self._as_is(row):
            return row
        return cast_row(obj, self.schema, ignore_unknown=ignore_unknown)

    def values(self, values: list[Any]) -> list[Any]:
        """The cast of one value per field, in schema order (`cast_row` of them named)."""
        if len(values) == len(self._names) and self._as_is(values):
            return values
        return cast_row(dict(zip(self._names, values, strict=True)), self.schema)

    def _as_is(self, row: list[Any]) -> bool:
        """Whether every value already is what `cast_row` would make of it."""
        if self._floats_only:  # NaN is cast_row's to decide: a sum of floats is NaN if one of them is
            total = sum(row) if set(map(type, row)) == _FLOAT else math.nan  # (or if +inf meets -inf:
            return total == total  # then cast_row decides too, and keeps the infinities)
        for v, t, ints in zip(row, self._types, self._ranges, strict=True):
            if type(v) is not t:
                return False
            if (t is float and v != v) or (ints is not None and not ints[0] <= typing.cast(int, v) < ints[1]):
                return False
        return True
