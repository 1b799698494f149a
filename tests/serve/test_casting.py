"""`RowCaster` is `cast_row`: the same row, or the same error, for every kind of value and field.

(tests/test_schema.py holds both, and `conform`, to one table of edge cases and to drawn values.)"""

from __future__ import annotations

import math
from typing import Any

import pytest

from augury.errors import SchemaError
from augury.schema import Field, Schema, cast_row
from augury.serve.casting import RowCaster

MIXED = Schema((Field("x", "float64"), Field("n", "int64"), Field("m", "int32"), Field("s", "string"),
                Field("b", "bool"), Field("h", "float32"), Field("y", "float64", allow_missing=True)))
FLOATS = Schema((Field("a", "float64"), Field("b", "float64", allow_missing=True)))

VALUES: list[Any] = [1.5, -0.0, 3, 0, 1, True, False, "2.5", "7", "true", "x", "", None, math.nan, math.inf,
                     2**63, -(2**63), 2**63 - 1, 1e30, [1], {"a": 1}, 2.0, 2**31, -(2**31) - 1, 2**31 - 1,
                     "0x10", 1.0, 0.0]


def _outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    """What `call(*args, **kwargs)` gives: ("row", its values with their types) or ("error", message)."""
    try:
        row = call(*args, **kwargs)
    except SchemaError as exc:
        return ("error", str(exc))
    return ("row", [("nan",) if isinstance(v, float) and math.isnan(v) else (type(v), v) for v in row])


@pytest.mark.parametrize("schema", [MIXED, FLOATS], ids=["mixed", "floats"])
@pytest.mark.parametrize("ignore_unknown", [False, True])
def test_every_value_in_every_field_casts_as_cast_row_does(schema: Schema, ignore_unknown: bool) -> None:
    cast = RowCaster(schema)
    plain = {"float64": 1.0, "float32": 1.0, "int64": 1, "int32": 1, "string": "s", "bool": True}
    base = {f.name: plain[f.dtype] for f in schema.fields}
    for f in schema.fields:
        for value in VALUES:
            obj = {**base, f.name: value}
            expected = _outcome(cast_row, dict(obj), schema, ignore_unknown=ignore_unknown)
            assert _outcome(cast, dict(obj), ignore_unknown) == expected, (f.name, value)
            values = [obj[n] for n in schema.names]
            assert _outcome(cast.values, values) == _outcome(cast_row, dict(obj), schema), (f.name, value)


@pytest.mark.parametrize("ignore_unknown", [False, True])
def test_missing_and_unknown_fields_get_cast_rows_answer(ignore_unknown: bool) -> None:
    cast = RowCaster(FLOATS)
    for obj in ({"a": 1.0}, {"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 1.0, "c": 3.0}, {}, {"b": 2.0, "a": 1.0}):
        assert _outcome(cast, dict(obj), ignore_unknown) == _outcome(
            cast_row, dict(obj), FLOATS, ignore_unknown=ignore_unknown), obj
