"""The three casts held to one answer (DESIGN.md, invariant 1).

`schema.conform` (Arrow, a batch at a time), `schema.cast_row` (one JSON object) and
`serve.casting.RowCaster` (the server's fast path) give, for every value and every dtype, the same value
(floats bit for bit, any NaN as NaN) or the same rejection with the same reason; and the keys
(`keys.feature_keys` of the batch cast, `keys.RowKeys` of the server's) of what they give are equal.
`TABLE` says what each edge case becomes; the property tests draw the rest.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augury.errors import SchemaError
from augury.keys import RowKeys, feature_keys
from augury.schema import DTYPES, Field, Schema, cast_row, conform
from augury.serve.casting import RowCaster

R = "rejected"
DT = ("float64", "float32", "int64", "int32", "bool", "string")
assert tuple(DTYPES) == DT
F32_ROUNDS_UP = "1.0000000596046447753906250001"  # above a float32 midpoint that float64 rounds onto
F32_MAX = 3.4028234663852886e38
F32_OVERFLOW = 3.4028235677973366e38  # 2**128 - 2**103: from here float32 rounds to infinity
F32_BELOW_OVERFLOW = "3.40282356779733661637539395458142568447e38"  # float64 rounds it onto F32_OVERFLOW

#: what each value becomes for a field of each dtype (in the order of `DT`), or R; allow_missing=False.
TABLE: list[tuple[Any, tuple[Any, ...]]] = [
    (math.nan, (R, R, R, R, R, "nan")),
    (math.inf, (math.inf, math.inf, R, R, R, "inf")),
    (-math.inf, (-math.inf, -math.inf, R, R, R, "-inf")),
    (-0.0, (-0.0, -0.0, 0, 0, False, "-0")),
    (1.0, (1.0, 1.0, 1, 1, True, "1")),
    (1.5, (1.5, 1.5, R, R, R, "1.5")),
    (2.0, (2.0, 2.0, 2, 2, R, "2")),
    (0.1, (0.1, 0.10000000149011612, R, R, R, "0.1")),
    (1e300, (1e300, math.inf, R, R, R, "1e+300")),  # float32 overflows to infinity, as Arrow casts it
    (F32_OVERFLOW, (F32_OVERFLOW, math.inf, R, R, R, "3.4028235677973366e+38")),
    ("3.4028235677973366e38", (F32_OVERFLOW, F32_MAX, R, R, R, "3.4028235677973366e38")),
    (F32_BELOW_OVERFLOW, (F32_OVERFLOW, F32_MAX, R, R, R, F32_BELOW_OVERFLOW)),
    (2.0**53, (2.0**53, 2.0**53, 2**53, R, R, "9.007199254740992e+15")),
    (2.0**63, (2.0**63, 2.0**63, R, R, R, "9.223372036854776e+18")),
    (0, (0.0, 0.0, 0, 0, False, "0")),
    (1, (1.0, 1.0, 1, 1, True, "1")),
    (2, (2.0, 2.0, 2, 2, R, "2")),
    (-1, (-1.0, -1.0, -1, -1, R, "-1")),
    (2**31, (2.0**31, 2.0**31, 2**31, R, R, "2147483648")),
    (-(2**31) - 1, (-(2.0**31) - 1, -(2.0**31), -(2**31) - 1, R, R, "-2147483649")),
    (2**53 + 1, (2.0**53, 2.0**53, 2**53 + 1, R, R, "9007199254740993")),
    (2**63 - 1, (2.0**63, 2.0**63, 2**63 - 1, R, R, "9223372036854775807")),
    (-(2**63), (-(2.0**63), -(2.0**63), -(2**63), R, R, "-9223372036854775808")),
    (2**63, (2.0**63, 2.0**63, R, R, R, "9223372036854775808")),  # a batch holds it as uint64
    (2**64, (2.0**64, 2.0**64, R, R, R, "18446744073709551616")),  # no Arrow integer holds it
    (10**30, (1e30, 1.0000000150474662e30, R, R, R, "1" + "0" * 30)),
    (True, (R, R, R, R, True, "true")),
    (False, (R, R, R, R, False, "false")),
    ("12", (12.0, 12.0, 12, 12, R, "12")),
    (" 3 ", (3.0, 3.0, 3, 3, R, " 3 ")),
    ("1.5", (1.5, 1.5, R, R, R, "1.5")),
    ("1e3", (1000.0, 1000.0, R, R, R, "1e3")),
    ("0x10", (R, R, R, R, R, "0x10")),
    ("0xFFFFFFFFFFFFFFFF", (R, R, R, R, R, "0xFFFFFFFFFFFFFFFF")),  # Arrow alone reads -1
    ("-0", (-0.0, -0.0, 0, 0, R, "-0")),
    ("nan", (R, R, R, R, R, "nan")),
    ("inf", (math.inf, math.inf, R, R, R, "inf")),
    ("true", (R, R, R, R, True, "true")),
    (" TRUE ", (R, R, R, R, True, " TRUE ")),
    ("1", (1.0, 1.0, 1, 1, True, "1")),
    ("0", (0.0, 0.0, 0, 0, False, "0")),
    ("2", (2.0, 2.0, 2, 2, R, "2")),
    ("9223372036854775808", (2.0**63, 2.0**63, R, R, R, "9223372036854775808")),
    (F32_ROUNDS_UP, (1.0000000596046448, 1.0000001192092896, R, R, R, F32_ROUNDS_UP)),
    (f" {F32_ROUNDS_UP} ", (1.0000000596046448, 1.0000001192092896, R, R, R, f" {F32_ROUNDS_UP} ")),
    ("", (R, R, R, R, R, "")),
    ("héllo", (R, R, R, R, R, "héllo")),
    ("日本", (R, R, R, R, R, "日本")),
    ("١٢", (12.0, 12.0, 12, 12, R, "١٢")),  # digits other than ASCII, as Python's int and float read them
    ("1_000", (1000.0, 1000.0, 1000, 1000, R, "1_000")),
    (None, (R, R, R, R, R, R)),
    ([1], (R, R, R, R, R, R)),
    ({"a": 1}, (R, R, R, R, R, R)),
]

#: with allow_missing, a null or a NaN is a float feature's value (NaN): only these rows change.
MISSING_OK: list[tuple[Any, tuple[Any, ...]]] = [
    (math.nan, (math.nan, math.nan, R, R, R, "nan")),
    (-math.nan, (math.nan, math.nan, R, R, R, "nan")),
    ("nan", (math.nan, math.nan, R, R, R, "nan")),
    ("NaN", (math.nan, math.nan, R, R, R, "NaN")),
    (None, (math.nan, math.nan, R, R, R, R)),
]


def _canon(v: Any) -> tuple[str, Any]:
    """A cast value, comparable bit for bit: a float by its bits (any NaN as one), others by type and
    value."""
    if isinstance(v, float):
        return ("float", "nan" if v != v else struct.pack("<d", v).hex())
    return (type(v).__name__, v)


Outcome = tuple[str, Any]


def _row_outcome(cast: Callable[[], list[Any]]) -> Outcome:
    try:
        return ("value", _canon(cast()[0]))
    except SchemaError as exc:
        return (R, str(exc))


def _column(values: Sequence[Any]) -> pa.Array | None:
    """The column a batch holds `values` in (Arrow's inference, as a JSON or Parquet reader would give;
    uint64 for ints past int64); None when no Arrow column holds them."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        try:
            return pa.array(values, type=pa.uint64())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            return None


def _batch_outcomes(column: pa.Array, field: Field) -> list[Outcome]:
    """`conform`'s outcome for each row of a one-column batch."""
    schema = Schema((field,))
    conformed = conform(pa.record_batch({field.name: column}), schema)
    kept = iter(conformed.batch.column(0).to_pylist())
    reasons = {e.index: e.reason for e in conformed.errors}
    return [(R, reasons[i]) if i in reasons else ("value", _canon(next(kept))) for i in range(len(column))]


def _outcomes(value: Any, field: Field) -> tuple[Outcome, Outcome, Outcome, Outcome | None]:
    """`cast_row`'s, `RowCaster`'s (called on the object and on the values), and `conform`'s outcome
    (None when no Arrow column holds the value)."""
    schema = Schema((field,))
    caster = RowCaster(schema)
    row = _row_outcome(lambda: cast_row({field.name: value}, schema))
    fast = _row_outcome(lambda: caster({field.name: value}))
    fast_values = _row_outcome(lambda: caster.values([value]))
    column = _column([value])
    batch = _batch_outcomes(column, field)[0] if column is not None else None
    return row, fast, fast_values, batch


def _expected(want: Any) -> Outcome | str:
    return R if want is R else ("value", _canon(want))


CASES = [(v, d, want[i], False) for v, want in TABLE for i, d in enumerate(DT)] + [
    (v, d, want[i], True) for v, want in MISSING_OK for i, d in enumerate(DT)]


@pytest.mark.parametrize(("value", "dtype", "want", "allow_missing"), CASES,
                         ids=[f"{v!r}-{d}{'-missing-ok' if m else ''}" for v, d, _, m in CASES])
def test_edge_cases_cast_as_the_table_says_on_every_path(value: Any, dtype: str, want: Any,
                                                          allow_missing: bool) -> None:
    field = Field("v", dtype, allow_missing=allow_missing)
    row, fast, fast_values, batch = _outcomes(value, field)
    assert (row[0] if row[0] == R else row) == _expected(want)
    assert fast == row
    assert fast_values == row
    if batch is not None:
        assert batch == row  # the same value, or the same reason
    else:
        assert isinstance(value, int) and not -(2**63) <= value < 2**64, value  # only ints past uint64


def test_the_table_covers_every_dtype_and_every_kind_of_edge() -> None:
    values = [v for v, _ in TABLE]
    assert all(len(want) == len(DT) for _, want in TABLE + MISSING_OK)
    assert {type(v) for v in values} >= {float, int, bool, str, type(None), list, dict}


@pytest.mark.parametrize("value", [v for v, want in TABLE if want[-1] is not R and not isinstance(v, str)])
def test_a_number_becomes_the_text_arrow_writes(value: Any) -> None:
    """The text of a number given for a string feature is Arrow's (which the batch path uses), not
    Python's: 2.0 -> "2", True -> "true"."""
    column = _column([value])
    if column is not None:
        assert cast_row({"v": value}, Schema((Field("v", "string"),))) == column.cast(pa.string()).to_pylist()


# -- drawn values -----------------------------------------------------------------------------------------

numeric_text = st.from_regex(r"\A\s?[+-]?(0[xX])?[0-9_]{0,8}(\.[0-9]{0,6})?([eE][+-]?[0-9]{1,3})?\s?\Z",
                             fullmatch=True)
special_text = st.sampled_from(["nan", "NaN", "-nan", "inf", "-Infinity", "true", "False", " 1 ", "0",
                                "1", "0x1F", "0X7FFFFFFF", "١٢", "１２", "1_0", "", " ", "t", "yes",
                                F32_ROUNDS_UP, F32_BELOW_OVERFLOW, "-3.4028235677973366e38"])
json_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(width=32),
    st.sampled_from([0.0, -0.0, 1.0, 2.0**31, 2.0**53, 2.0**63, 2.0**64, F32_MAX, F32_OVERFLOW, 5e-324]),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.integers(),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63), 2**63]),
    st.booleans(),
    st.none(),
    numeric_text,
    special_text,
    st.text(max_size=8),
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_every_value_casts_alike_on_every_path(value: Any) -> None:
    for dtype in DT:
        for allow_missing in (False, True):
            field = Field("v", dtype, allow_missing=allow_missing)
            row, fast, fast_values, batch = _outcomes(value, field)
            assert fast == row, (dtype, allow_missing)
            assert fast_values == row, (dtype, allow_missing)
            if batch is not None:
                assert batch == row, (dtype, allow_missing)


MIXED = Schema(tuple(Field(f"{d}_{m}", d, allow_missing=m) for d in DT for m in (False, True)))
#: the Python type of each column's values (a column holds one), then its values, None among them
column_values = st.sampled_from(["float", "int", "str", "bool"]).flatmap(lambda kind: st.lists(
    st.one_of(st.none(), {
        "float": st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1.0, 1e300]),
        "int": st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([0, 1, 2**31]),
        "str": numeric_text | special_text | st.text(max_size=6),
        "bool": st.booleans(),
    }[kind]), min_size=4, max_size=4))


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({f.name: column_values for f in MIXED.fields}))
def test_a_batch_casts_each_row_as_the_server_does_and_keys_it_alike(columns: dict[str, list[Any]]) -> None:
    """`conform` of a whole batch, row by row, equals `cast_row` and `RowCaster` of each row as a JSON
    object: the same values or the same first reason; and each kept row's `feature_keys` key is the key
    `RowKeys` gives the server's row (DESIGN.md, invariant 3, across the two casts)."""
    batch = pa.record_batch({name: pa.array(values) for name, values in columns.items()})
    conformed = conform(batch, MIXED)
    reasons = {e.index: e.reason for e in conformed.errors}
    batch_keys = iter(feature_keys(conformed.batch, MIXED).to_pylist())
    batch_rows = iter(conformed.batch.to_pylist())
    caster, row_keys = RowCaster(MIXED), RowKeys(MIXED)
    for i in range(batch.num_rows):
        obj = {name: values[i] for name, values in columns.items()}
        try:
            row = cast_row(obj, MIXED)
        except SchemaError as exc:
            assert reasons.get(i) == str(exc), i
            with pytest.raises(SchemaError, match="^" + re.escape(str(exc)) + "$"):
                caster(dict(obj))
            continue
        assert i not in reasons, (i, reasons.get(i))
        fast = caster(dict(obj))
        kept = next(batch_rows)
        assert [_canon(v) for v in fast] == [_canon(v) for v in row] == [_canon(kept[n]) for n in MIXED.names]
        assert row_keys(fast) == next(batch_keys)
