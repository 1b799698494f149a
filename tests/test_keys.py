"""Canonical keys: stable, NaN- and -0.0-canonical, the same from the batch (vectorised) and the server
(per row) paths."""

from __future__ import annotations

import math
import struct
from typing import Any

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

#: Keys computed by the code of commit f82994c (before the word function and the fold became one
#: definition each): keys already published in stores must still be found. Each is checked through
#: `feature_keys`, `RowKeys` and `row_key`.
PINNED_ONE_FEATURE: list[tuple[str, Any, str]] = [
    ("float64", 0.0, "28abf77bfbcfe609c6bb91b9e4336a5c"),
    ("float64", -0.0, "28abf77bfbcfe609c6bb91b9e4336a5c"),
    ("float64", math.nan, "ab7bdb2ebe48095829effe7f921ff46d"),
    ("float64", -math.nan, "ab7bdb2ebe48095829effe7f921ff46d"),
    ("float64", struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0],  # a NaN with a payload
     "ab7bdb2ebe48095829effe7f921ff46d"),
    ("float64", math.inf, "b0df4a669576069b1271592d37e40b33"),
    ("float64", -math.inf, "91bd918d74a628c0b1b708158ed7e37d"),
    ("float64", 5e-324, "76db5845be09dc20e5b3c982e4709524"),
    ("float64", 1.5, "93e6a174382d18a45ff9f2d97cd664bf"),
    ("float64", -1e300, "ae1fe7bdaf8cdfc3f097a280c8fe5c85"),
    ("float64", 2.0**53 + 2, "412cab26b57439add324f10d8a9ea5ea"),
    ("float64", None, "c086cee9c3d1ac3ba149f9002162cf0c"),
    ("float32", 0.10000000149011612, "daad253a4bd9adb8a41d23100937c5c9"),
    ("float32", -0.0, "28abf77bfbcfe609c6bb91b9e4336a5c"),
    ("float32", 3.4028234663852886e38, "79c99d55fccb402c0c6153b9cfb6432e"),
    ("float32", math.nan, "ab7bdb2ebe48095829effe7f921ff46d"),
    ("float32", None, "c086cee9c3d1ac3ba149f9002162cf0c"),
    ("int64", 0, "28abf77bfbcfe609c6bb91b9e4336a5c"),
    ("int64", -1, "88ccf21f7829d8a0a13e788c973b6e48"),
    ("int64", 12, "8474985265da0ed110e1106a6ee8372f"),
    ("int64", 2**53 + 1, "a74e2b1d6d84d90f896d37864d641d65"),
    ("int64", 2**63 - 1, "bf4ccd5fc20dd946134d4c745b84e7ae"),
    ("int64", -(2**63), "96948b2d70e30a4067bee879ba311d77"),
    ("int64", None, "c086cee9c3d1ac3ba149f9002162cf0c"),
    ("int32", 0, "28abf77bfbcfe609c6bb91b9e4336a5c"),
    ("int32", -(2**31), "d4bbda26a3c8c376b48737e53f7896c2"),
    ("int32", 2**31 - 1, "ef536ad83dd1ae4c8bded5beca16f10c"),
    ("int32", None, "c086cee9c3d1ac3ba149f9002162cf0c"),
    ("bool", True, "76db5845be09dc20e5b3c982e4709524"),
    ("bool", False, "28abf77bfbcfe609c6bb91b9e4336a5c"),
    ("bool", None, "c086cee9c3d1ac3ba149f9002162cf0c"),
    ("string", "", "694aca05924d610cc1f12879c51c5edc"),
    ("string", "12", "0c4f9afa838c953fc5021f5f46473bf6"),
    ("string", " 3 ", "224983f73f46a0a04b3ea0492eb56251"),
    ("string", "héllo", "158b7d2715ade77384fdd8a4614ca3ed"),
    ("string", "日本語", "f05b6d452acde1b7d048a3a145158fa5"),
    ("string", "\x00", "0247740f7d47fa945eafbea63750e7a1"),
    ("string", "🙂", "9239382d711e344c41ce538e69bba20b"),
    ("string", None, "c086cee9c3d1ac3ba149f9002162cf0c"),
]

PINNED_MIXED = Schema((Field("x", "float64", allow_missing=True), Field("n", "int64"), Field("t", "string"),
                       Field("b", "bool"), Field("y", "float32", allow_missing=True), Field("m", "int32")))
F20 = Schema(tuple(Field(f"f{i}", "float64", allow_missing=True) for i in range(20)))
WIDE = Schema(tuple(Field(f"f{i}", "float64") for i in range(5000)))
WIDE_MIXED = Schema(tuple(Field(f"f{i}", ("float64", "int64", "string", "bool")[i % 4]) for i in range(4100)))
PINNED_ROWS: list[tuple[str, Schema, list[Any], str]] = [
    ("mixed", PINNED_MIXED, [1.5, 3, "abc", True, 0.25, -7], "c64ea0af8e673ed48ea75c5da65690f4"),
    ("mixed-edges", PINNED_MIXED, [math.nan, -(2**63), "", False, -0.0, 0],
     "597038d2e409e2ae0744d609edf7805d"),
    ("mixed-extremes", PINNED_MIXED, [-0.0, 2**63 - 1, "日本語 12", True, math.inf, 2**31 - 1],
     "f76acde8dd0e90f733796b08f35c0c78"),
    ("mixed-nulls", PINNED_MIXED, [None] * 6, "844fa47a415cb4f67c6d3d06162c759d"),
    ("20-floats", F20, [i / 7 for i in range(20)], "622890c299c2c2dc17d39200c8db82b6"),
    ("20-floats-edges", F20, [(math.nan, -0.0, 1e300)[i % 3] for i in range(20)],
     "d634e5e41853aeeeca0f8c73ab73a97a"),
    ("20-floats-null", F20, [None if i == 5 else float(i) for i in range(20)],
     "7aa07ae5d9ecf1fe41eb7ca07a5ce898"),
    ("5000-floats", WIDE, [i / 7 for i in range(5000)], "84f11da60b56fb71fb2baa35e538c896"),
    ("4100-mixed", WIDE_MIXED, [(i / 7, i * 1000003, str(i), i % 3 == 0)[i % 4] for i in range(4100)],
     "7da26528187e26b59217a94ed63809f9"),
]


def _one_row_batch(schema: Schema, row: list[Any]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array([v], type=f.arrow_type) for v, f in zip(row, schema.fields, strict=True)],
        schema=schema.to_arrow())


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "python"])
def test_pinned_keys_are_still_found(compiled: bool) -> None:
    """Every path gives the key the published stores hold, numba or not."""
    cases = [(f"{d}:{v!r}", Schema((Field("v", d, allow_missing=True),)), [v], k)
             for d, v, k in PINNED_ONE_FEATURE] + PINNED_ROWS
    saved = keys._FOLD
    try:
        if not compiled:
            keys._FOLD = [None]
        for name, schema, row, key in cases:
            assert feature_keys(_one_row_batch(schema, row), schema)[0].as_py() == key, name
            assert RowKeys(schema)(row) == key, name
            assert row_key(row, schema) == key, name
    finally:
        keys._FOLD = saved


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


def test_the_compiled_functions_are_the_python_ones() -> None:
    """One word function and one fold: numba compiles `_fold` and `_float_words` themselves, the
    functions `feature_keys` runs on arrays and `RowKeys` runs on ints without numba."""
    pytest.importorskip("numba")
    compiled = keys._compiled()
    assert compiled is not None
    assert compiled.fold.py_func is keys._fold  # type: ignore[attr-defined]
    assert compiled.float_words.py_func is keys._float_words  # type: ignore[attr-defined]
    assert compiled.float_row.py_func is keys._float_row  # type: ignore[attr-defined]
