"""Canonical keys: how an example is found in a prediction store (DESIGN.md, invariant 3).

With key columns, the key is their value as text (one column), or a compact JSON array of the values
(several columns). With none, the key is a 128-bit hash of the example's feature values, taken after the
cast to the model's input schema, in schema order, written as 32 lowercase hex digits. The encoding is
stable: every NaN is one NaN, -0.0 equals 0.0, float32 values are widened to float64, strings are hashed as
UTF-8, and a null is distinct from every value. The batch runner and the server both call `feature_keys`.

The hash is two independent 64-bit lanes, each folding one 64-bit word per feature through the murmur3
finaliser (a bijection), so two examples that differ in a single feature never collide in either lane.
It is vectorised with NumPy: hashing costs a few nanoseconds per feature and row. The server hashes one
row at a time (`row_key`): the fold over the words costs ~22 µs in pure Python for 20 features (80 big-
integer operations), and ~2 µs compiled with numba when it is installed (``augury[fast]``); both give
the same key (tests/test_keys.py checks the two against `feature_keys`).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from augury.schema import Schema

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_SEED1 = 0x243F6A8885A308D3
_SEED2 = 0x13198A2E03707344
_STEP1 = 0x9E3779B97F4A7C15
_STEP2 = 0xC2B2AE3D27D4EB4F
_NULL_WORD = np.uint64(0x6A09E667F3BCC909)
_CANONICAL_NAN = np.frombuffer(np.float64("nan").tobytes(), dtype=np.uint64)[0] | np.uint64(
    0x7FF8000000000000
)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _fmix(h: np.ndarray) -> np.ndarray:
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def _words(col: pa.Array, dtype: str) -> np.ndarray:
    """One canonical uint64 word per value of `col` (already cast to `dtype`)."""
    nulls = None
    if col.null_count:
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if dtype == "string":
        raw = col.to_pylist()
        words = np.fromiter(
            (
                int.from_bytes(hashlib.blake2b(v.encode("utf-8"), digest_size=8).digest(), "little")
                if v is not None
                else 0
                for v in raw
            ),
            dtype=np.uint64,
            count=len(raw),
        )
    elif dtype == "bool":
        words = np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.uint64)
    elif dtype.startswith("int"):
        words = np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64).view(np.uint64)
    else:
        x = np.array(col.to_numpy(zero_copy_only=False), dtype=np.float64)  # a copy we may change
        x[x == 0.0] = 0.0  # -0.0 -> 0.0
        words = x.view(np.uint64)
        words[np.isnan(x)] = _CANONICAL_NAN
    if nulls is not None:
        words = words.copy()
        words[nulls] = _NULL_WORD
    return words


def feature_keys(batch: pa.RecordBatch, schema: Schema) -> pa.StringArray:
    """The canonical hash key of each row of `batch`, which must already be conformed to `schema`."""
    n = batch.num_rows
    h1 = np.full(n, _SEED1, dtype=np.uint64)
    h2 = np.full(n, _SEED2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, f in enumerate(schema.fields):
            w = _words(batch.column(f.name), f.dtype)
            h1 = _fmix(h1 ^ (w + np.uint64((_STEP1 * (i + 1)) & 0xFFFFFFFFFFFFFFFF)))
            h2 = _fmix(h2 ^ ((w ^ np.uint64(_STEP2)) * np.uint64((2 * i + 3) | 1)))
    digest = np.empty((n, 2), dtype=">u8")
    digest[:, 0] = h1
    digest[:, 1] = h2
    raw = digest.view(np.uint8).reshape(n, 16)
    text = np.empty((n, 32), dtype=np.uint8)
    text[:, 0::2] = _HEX[raw >> 4]
    text[:, 1::2] = _HEX[raw & 15]
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text.tobytes()))


def key_text(values: list[Any]) -> str:
    """The store key of one example from its key-column values (one value: as text; several: JSON)."""
    if len(values) == 1:
        return _scalar_text(values[0])
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def _scalar_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def column_keys(batch: pa.RecordBatch | pa.Table, key_columns: list[str]) -> pa.StringArray:
    """The store key of each row from its key columns (see `key_text`)."""
    if len(key_columns) == 1:
        col = batch.column(key_columns[0])
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_string(col.type) and not col.null_count:
            return col
        if pa.types.is_integer(col.type) and not col.null_count:
            return col.cast(pa.string())
    cols = [batch.column(c).to_pylist() for c in key_columns]
    return pa.array([key_text(list(vals)) for vals in zip(*cols, strict=True)], type=pa.string())


_MASK = 0xFFFFFFFFFFFFFFFF
_NAN_BITS = int(_CANONICAL_NAN)


def _fmix_int(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


def _word(v: Any, dtype: str) -> int:
    if v is None:
        return int(_NULL_WORD)
    if dtype == "string":
        return int.from_bytes(hashlib.blake2b(v.encode("utf-8"), digest_size=8).digest(), "little")
    if dtype == "bool":
        return 1 if v else 0
    if dtype.startswith("int"):
        return int(v) & _MASK
    x = float(v)
    if x != x:
        return _NAN_BITS
    if x == 0.0:
        x = 0.0
    return int.from_bytes(struct.pack("<d", x), "little")


def row_key(values: Sequence[Any], schema: Schema) -> str:
    """The canonical hash key of one example, `values` already cast to `schema` in schema order.

    Always equal to `feature_keys` on the same row (tests/test_keys.py checks it). To hash many rows of
    one schema one at a time (a server), keep a `RowKeys`."""
    return RowKeys(schema)(values)


class RowKeys:
    """``RowKeys(schema)(values)`` == ``row_key(values, schema)``, with what depends on the schema worked
    out once: for float features only and no nulls, the values go to the compiled fold as one float64
    array (canonicalised there), ~2 µs a row for 20 features instead of ~8 with a word per value."""

    def __init__(self, schema: Schema) -> None:
        self._dtypes = tuple(f.dtype for f in schema.fields)
        self._floats = all(d == "float64" for d in self._dtypes) and len(self._dtypes) <= _MAX_COMPILED

    def warm_up(self) -> None:
        """Compile the fold now (about 0.3 s the first time, then read from numba's cache) rather than on
        the first row."""
        fold = _compiled_fold()
        if fold is not None:
            fold.words(fold.floats(np.zeros(1)), fold.steps1, fold.steps2)

    def __call__(self, values: Sequence[Any]) -> str:
        fold = _compiled_fold()
        if fold is not None and self._floats and len(values) == len(self._dtypes) and None not in values:
            h1, h2 = fold.words(fold.floats(np.array(values, dtype=np.float64)), fold.steps1, fold.steps2)
            return f"{int(h1):016x}{int(h2):016x}"
        words = [_word(v, d) for d, v in zip(self._dtypes, values, strict=True)]
        if fold is not None and len(words) <= _MAX_COMPILED:
            h1, h2 = fold.words(np.array(words, dtype=np.uint64), fold.steps1, fold.steps2)
            return f"{int(h1):016x}{int(h2):016x}"
        return _fold_python(words)


def _fold_python(words: list[int]) -> str:
    h1, h2 = _SEED1, _SEED2
    for i, w in enumerate(words):
        h1 = _fmix_int(h1 ^ ((w + _STEP1 * (i + 1)) & _MASK))
        h2 = _fmix_int(h2 ^ (((w ^ _STEP2) * ((2 * i + 3) | 1)) & _MASK))
    return f"{h1:016x}{h2:016x}"


#: schemas of up to this many features are hashed by the compiled fold.
_MAX_COMPILED = 4096


class _CompiledFold(NamedTuple):
    """`_fold_words` and `_float_words` compiled, and the per-feature constants of the two lanes."""

    words: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[Any, Any]]
    floats: Callable[[np.ndarray], np.ndarray]
    steps1: np.ndarray
    steps2: np.ndarray


_FOLD: list[_CompiledFold | None] = []


def _compiled_fold() -> _CompiledFold | None:
    """`_fold_python` compiled with numba (the same uint64 arithmetic, wrapping), over words and over
    float64 values; None without numba. Made on first use, not at import."""
    if not _FOLD:
        try:
            import numba
        except ImportError:
            _FOLD.append(None)
        else:
            jit = numba.njit(cache=True, nogil=True)
            steps1 = np.array([(_STEP1 * (i + 1)) & _MASK for i in range(_MAX_COMPILED)], dtype=np.uint64)
            steps2 = np.array([(2 * i + 3) | 1 for i in range(_MAX_COMPILED)], dtype=np.uint64)
            _FOLD.append(_CompiledFold(jit(_fold_words), jit(_float_words), steps1, steps2))
    return _FOLD[0]


def _float_words(x: np.ndarray) -> np.ndarray:
    """The canonical words of float64 values (-0.0 as 0.0, one NaN), as `_word` makes them."""
    bits = x.view(np.uint64)
    words = np.empty(x.shape[0], dtype=np.uint64)
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            words[i] = np.uint64(_NAN_BITS)
        elif v == 0.0:
            words[i] = np.uint64(0)
        else:
            words[i] = bits[i]
    return words


def _fold_words(words: np.ndarray, steps1: np.ndarray, steps2: np.ndarray) -> tuple[Any, Any]:
    """The two lanes over `words` (uint64), as `_fold_python` computes them (compiled by numba)."""
    s33 = np.uint64(33)
    m1 = np.uint64(0xFF51AFD7ED558CCD)
    m2 = np.uint64(0xC4CEB9FE1A85EC53)
    step2 = np.uint64(_STEP2)
    h1 = np.uint64(_SEED1)
    h2 = np.uint64(_SEED2)
    for i in range(words.shape[0]):
        w = words[i]
        h = h1 ^ (w + steps1[i])
        h ^= h >> s33
        h *= m1
        h ^= h >> s33
        h *= m2
        h1 = h ^ (h >> s33)
        h = h2 ^ ((w ^ step2) * steps2[i])
        h ^= h >> s33
        h *= m1
        h ^= h >> s33
        h *= m2
        h2 = h ^ (h >> s33)
    return h1, h2
