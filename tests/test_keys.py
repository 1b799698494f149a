"""Canonical keys: stable, NaN- and -0.0-canonical, the same from the batch (vectorised) and the server
(per row) paths."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from augury import keys
from augury.keys import RowKeys, column_keys, feature_keys, key_text, row_key
from augury.schema import Field, Schema, cast_row, conform

SCHEMA = Schema(
    (
        Field("x", "float64", allow_missing=True),
        Field("n", "int64"),
        Field("t", "string"),
        Field("b", "bool"),
        Field("y", "float32", allow_missing=True),
    )
)

rows = st.tuples(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(),
    st.booleans(),
    st.floats(width=32, allow_nan=True),
)


def batch_of(values: list[tuple[object, ...]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([dict(zip(SCHEMA.names, v, strict=True)) for v in values])


@settings(max_examples=200, deadline=None)
@given(st.lists(rows, min_size=1, max_size=20))
def test_row_key_equals_feature_keys(values: list[tuple[object, ...]]) -> None:
    conformed = conform(batch_of(values), SCHEMA)
    assert not conformed.errors
    vectorised = feature_keys(conformed.batch, SCHEMA).to_pylist()
    per_row = [row_key(cast_row(dict(zip(SCHEMA.names, v, strict=True)), SCHEMA), SCHEMA) for v in values]
    assert vectorised == per_row
    # and a row's key does not depend on the batch it is in
    assert [
        feature_keys(conformed.batch.slice(i, 1), SCHEMA)[0].as_py() for i in range(len(values))
    ] == per_row


FLOATS = Schema(tuple(Field(f"f{i}", "float64", allow_missing=True) for i in range(7)))
float_rows = st.lists(st.one_of(st.floats(), st.sampled_from([0.0, -0.0, math.nan, -math.inf, 5e-324])),
                      min_size=7, max_size=7)


@settings(max_examples=300, deadline=None)
@given(st.lists(float_rows, min_size=1, max_size=10))
def test_row_keys_of_float_rows_equal_feature_keys_compiled_or_not(values: list[list[float]]) -> None:
    batch = conform(pa.RecordBatch.from_pylist([dict(zip(FLOATS.names, v, strict=True)) for v in values]),
                    FLOATS).batch
    expected = feature_keys(batch, FLOATS).to_pylist()
    per_row = RowKeys(FLOATS)
    assert [per_row(v) for v in values] == expected == [row_key(v, FLOATS) for v in values]
    compiled = keys._FOLD
    try:  # the pure-Python fold, as without numba
        keys._FOLD = [None]
        assert [per_row(v) for v in values] == expected
    finally:
        keys._FOLD = compiled


def test_canonical_encoding() -> None:
    s = Schema((Field("x", "float64", allow_missing=True),))
    keys = feature_keys(
        conform(pa.record_batch({"x": [0.0, -0.0, math.nan, -math.nan, None, 1.0]}), s).batch, s
    ).to_pylist()
    assert keys[0] == keys[1]  # -0.0 is 0.0
    assert keys[2] == keys[3] == keys[4]  # one NaN; a null float is NaN
    assert keys[5] != keys[0] and len(set(keys)) == 3
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys)


def test_keys_are_stable_across_releases() -> None:
    """Stored keys must never change meaning: pin one."""
    s = Schema.of([("a", "float64"), ("t", "string")])
    assert (
        row_key([1.5, "héllo"], s)
        == feature_keys(pa.record_batch({"a": [1.5], "t": ["héllo"]}), s)[0].as_py()
    )
    assert row_key([1.5, "héllo"], s) == PINNED


PINNED = "08ed56ea0b58e3d000db1514cd85c228"


def test_text_cast_gives_the_same_key_as_a_number() -> None:
    s = Schema.of([("a", "float64")])
    from_text = conform(pa.record_batch({"a": ["0.1"]}), s).batch
    from_float = conform(pa.record_batch({"a": [0.1]}), s).batch
    assert feature_keys(from_text, s).to_pylist() == feature_keys(from_float, s).to_pylist()
    assert row_key(cast_row({"a": "0.1"}, s), s) == feature_keys(from_float, s)[0].as_py()


def test_column_keys() -> None:
    b = pa.record_batch({"id": [7, 8], "region": ["eu", "us"]})
    assert column_keys(b, ["id"]).to_pylist() == ["7", "8"]
    assert column_keys(b, ["region", "id"]).to_pylist() == ['["eu",7]', '["us",8]']
    assert key_text([3.0]) == "3" and key_text([True]) == "true"


def test_no_collisions_on_a_million_rows() -> None:
    s = Schema.of([("a", "float64"), ("b", "float64")])
    rng = np.random.default_rng(0)
    b = pa.record_batch({"a": rng.normal(size=1_000_000), "b": np.zeros(1_000_000)})
    keys = feature_keys(b, s)
    assert len(set(keys.to_pylist())) == 1_000_000


@pytest.mark.parametrize("bad", [{"x": "abc"}, {}, {"x": 1.0, "zzz": 1}])
def test_cast_row_errors_name_the_field(bad: dict[str, object]) -> None:
    from augury.errors import SchemaError

    with pytest.raises(SchemaError, match=r"x|zzz"):
        cast_row(bad, Schema.of([("x", "float64")]))
