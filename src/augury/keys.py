"""Canonical keys: how an example is found in a prediction store (DESIGN.md, invariant 3).

With key columns, the key is their value as text (one column), or a compact JSON array of the values
(several columns). With none, the key is a 128-bit hash of the example's feature values, taken after the
cast to the model's input schema (`schema.conform`, or `schema.cast_row` on the server), in schema order,
written as 32 lowercase hex digits. The encoding is stable: every NaN is one NaN, -0.0 equals 0.0,
float32 values are widened to float64, ints and bools are their 64-bit two's complement, strings are
hashed as UTF-8, and a null is distinct from every value.

Where the invariant lives, once each:

- `_words`: a value's canonical 64-bit word (with `_float_words` and `_string_word` for its kinds);
- `_fold`: the words of one example folded into the key's two 64-bit lanes, each through the murmur3
  finaliser (a bijection), so two examples that differ in a single feature never collide in either lane.

Both are written with operators only, so one source serves every caller: `feature_keys` (the batch
runner, verify, advise) runs them on NumPy arrays, one array per feature (a few nanoseconds per feature
and row); `RowKeys` (the server, one row at a time) runs them on one row's words, compiled by numba when
it is installed (``augury[fast]``: ~2 µs a row of 20 float features, the call included) or as Python
over ints (~18 µs). Numba compiles these very functions (`test_the_compiled_functions_are_the_python_ones`).

Pinned by tests/test_keys.py: keys computed by the code before this layout are hard-coded
(`test_pinned_keys_are_still_found`, with numba and without), and property tests hold `RowKeys` and
`row_key` to `feature_keys`; tests/test_schema.py holds the key of a batch-cast row to that of the same
row cast by the server.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from augury.schema import Schema

_MASK = 0xFFFFFFFFFFFFFFFF
_M1 = 0xFF51AFD7ED558CCD
_M2 = 0xC4CEB9FE1A85EC53
_SEED1 = 0x243F6A8885A308D3
_SEED2 = 0x13198A2E03707344
_STEP1 = 0x9E3779B97F4A7C15
_STEP2 = 0xC2B2AE3D27D4EB4F
_NULL_WORD = 0x6A09E667F3BCC909
_NAN_BITS = 0x7FF8000000000000  # the one NaN: quiet, no payload, sign clear
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

#: how each dtype's values become words: as float64, as int64, or as text.
_KIND = {"float64": "float", "float32": "float", "int64": "int", "int32": "int", "bool": "int",
         "string": "string"}
#: what stands in for a null before the null's word replaces it.
_FILL: dict[str, Any] = {"float": 0.0, "int": 0, "string": ""}


# -- the word of a value ----------------------------------------------------------------------------------


def _float_words(x: np.ndarray) -> np.ndarray:
    """The words of float64 values: their IEEE bits, with -0.0 as 0.0 and every NaN as one NaN.

    NumPy as written; compiled by numba for `RowKeys` (the same source)."""
    words = x.view(np.uint64).copy()
    words[x == 0.0] = 0
    words[x != x] = _NAN_BITS
    return words


def _string_word(s: str) -> int:
    """The word of a string: the first 8 bytes of the BLAKE2b digest of its UTF-8, little-endian."""
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def _words(values: Any, kind: str, nulls: np.ndarray | None = None,
           float_words: Callable[[np.ndarray], np.ndarray] = _float_words) -> np.ndarray:
    """The canonical word of each of `values` (all of one `_KIND`; `nulls`: where they are null, with
    `_FILL` standing in), as a uint64 array: the one definition every key is made from.

    `values` is an array or a list (a column of a batch, or one row's values of that kind). `float_words`
    is `_float_words`, or the same function compiled."""
    if kind == "float":
        words = float_words(np.ascontiguousarray(values, dtype=np.float64))
    elif kind == "int":
        words = np.asarray(values, dtype=np.int64).view(np.uint64)
    else:
        words = np.fromiter(map(_string_word, values), dtype=np.uint64, count=len(values))
    if nulls is not None:
        words = np.where(nulls, np.uint64(_NULL_WORD), words)
    return words


# -- the fold of the words into the key -------------------------------------------------------------------


def _mix(h: Any) -> Any:
    """The murmur3 64-bit finaliser, on a Python int, a uint64 NumPy array (changed in place: `_fold`
    gives it a temporary) or a numba uint64. The masks keep a Python int to 64 bits; they change nothing
    on uint64."""
    h ^= h >> 33
    h *= _M1
    h &= _MASK
    h ^= h >> 33
    h *= _M2
    h &= _MASK
    h ^= h >> 33
    return h


def _fold(words: Iterable[Any], seeds: Any, steps1: Any, steps2: Any) -> tuple[Any, Any]:
    """The key's two lanes over the words of one example's features, in schema order.

    A word is a Python int (one row, pure Python), a numba uint64 (one row, compiled) or a uint64 array
    (one feature of many rows, `feature_keys`); `seeds` and the per-feature `steps` (`_Lanes`) come in the
    same kind of number, so the arithmetic is the same in each."""
    h1, h2 = seeds[0], seeds[1]
    for i, w in enumerate(words):
        h1 = _mix(h1 ^ ((w + steps1[i]) & _MASK))
        h2 = _mix(h2 ^ (((w ^ _STEP2) * steps2[i]) & _MASK))
    return h1, h2


class _Lanes(NamedTuple):
    """The constants of `_fold` for `n` features: the two seeds and each feature's step in each lane."""

    seeds: Any
    steps1: Any
    steps2: Any


@functools.lru_cache(maxsize=64)
def _lanes(n: int) -> _Lanes:
    """`_fold`'s constants for `n` features, as Python ints."""
    return _Lanes((_SEED1, _SEED2), tuple((_STEP1 * (i + 1)) & _MASK for i in range(n)),
                  tuple((2 * i + 3) | 1 for i in range(n)))


def _hex(h1: Any, h2: Any) -> str:
    return f"{int(h1):016x}{int(h2):016x}"


# -- many rows --------------------------------------------------------------------------------------------


def _column_words(col: pa.Array, dtype: str) -> np.ndarray:
    """`_words` of one column of a batch cast to `dtype`."""
    kind = _KIND[dtype]
    nulls = None
    if col.null_count:
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        col = col.fill_null(False if dtype == "bool" else _FILL[kind])
    values = col.to_pylist() if kind == "string" else col.to_numpy(zero_copy_only=False)
    return _words(values, kind, nulls)


def feature_keys(batch: pa.RecordBatch, schema: Schema) -> pa.StringArray:
    """The canonical hash key of each row of `batch`, which must already be conformed to `schema`."""
    n = batch.num_rows
    lanes = _lanes(len(schema.fields))
    seeds = (np.full(n, _SEED1, dtype=np.uint64), np.full(n, _SEED2, dtype=np.uint64))
    words = (_column_words(batch.column(f.name), f.dtype) for f in schema.fields)
    h1, h2 = _fold(words, seeds, lanes.steps1, lanes.steps2)
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


# -- one row ----------------------------------------------------------------------------------------------


def row_key(values: Sequence[Any], schema: Schema) -> str:
    """The canonical hash key of one example, `values` already cast to `schema` in schema order.

    Always equal to `feature_keys` on the same row (tests/test_keys.py checks it). To hash many rows of
    one schema one at a time (a server), keep a `RowKeys`."""
    return _row_keys(schema)(values)


@functools.lru_cache(maxsize=64)
def _row_keys(schema: Schema) -> RowKeys:
    return RowKeys(schema)


class RowKeys:
    """``RowKeys(schema)(values)`` == ``row_key(values, schema)``, with what depends on the schema worked
    out once: `_fold`'s constants, and which positions hold values of which kind.

    The words are `_words` of each kind's values, folded by `_fold`, both compiled by numba when it is
    installed; a row of float features only and no null is hashed in one compiled call (`_float_row`)."""

    def __init__(self, schema: Schema) -> None:
        kinds = [_KIND[f.dtype] for f in schema.fields]
        self._n = len(kinds)
        self._floats = all(k == "float" for k in kinds)
        #: (kind, its positions, what takes the row's values at those positions as a tuple)
        self._groups = tuple(_group(kind, [i for i, k in enumerate(kinds) if k == kind])
                             for kind in dict.fromkeys(kinds))
        self._lanes = _lanes(self._n)
        self._seeds = np.array(self._lanes.seeds, dtype=np.uint64)
        self._steps1 = np.array(self._lanes.steps1, dtype=np.uint64)
        self._steps2 = np.array(self._lanes.steps2, dtype=np.uint64)

    def warm_up(self) -> None:
        """Compile the fold now (about a second the first time, then read from numba's cache) rather than
        on the first row."""
        compiled = _compiled()
        if compiled is None:
            return
        if self._floats:
            compiled.float_row(np.zeros(self._n), self._seeds, self._steps1, self._steps2)
        compiled.fold(np.zeros(self._n, dtype=np.uint64), self._seeds, self._steps1, self._steps2)
        compiled.float_words(np.zeros(1))

    def __call__(self, values: Sequence[Any]) -> str:
        if len(values) != self._n:
            raise ValueError(f"{len(values)} values for {self._n} features")
        compiled = _FOLD[0] if _FOLD else _compiled()
        if compiled is None:
            return _hex(*_fold(self._words(values, _float_words).tolist(), *self._lanes))
        if self._floats and None not in values:
            x = np.array(values, dtype=np.float64)
            return _hex(*compiled.float_row(x, self._seeds, self._steps1, self._steps2))
        words = self._words(values, compiled.float_words)
        return _hex(*compiled.fold(words, self._seeds, self._steps1, self._steps2))

    def _words(self, values: Sequence[Any], float_words: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """`_words` of the row, kind by kind, in schema order."""
        if None in values:
            return self._words_with_nulls(values, float_words)
        if len(self._groups) == 1:
            return _words(values, self._groups[0][0], None, float_words)
        words = np.empty(self._n, dtype=np.uint64)
        for kind, positions, take in self._groups:
            words[positions] = _words(take(values), kind, None, float_words)
        return words

    def _words_with_nulls(self, values: Sequence[Any],
                          float_words: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        words = np.empty(self._n, dtype=np.uint64)
        for kind, positions, take in self._groups:
            part = take(values)
            nulls = np.array([v is None for v in part], dtype=bool)
            part = tuple(_FILL[kind] if v is None else v for v in part)
            words[positions] = _words(part, kind, nulls, float_words)
        return words


_Take = Callable[[Sequence[Any]], tuple[Any, ...]]


def _group(kind: str, positions: list[int]) -> tuple[str, np.ndarray, _Take]:
    """`RowKeys`' view of the features of one kind: their positions, and what takes their values."""
    take: _Take
    if len(positions) == 1:
        (i,) = positions
        take = lambda values: (values[i],)  # noqa: E731  (itemgetter of one item gives the item)
    else:
        take = operator.itemgetter(*positions)
    return kind, np.array(positions, dtype=np.intp), take


def _float_row(x: np.ndarray, seeds: np.ndarray, steps1: np.ndarray, steps2: np.ndarray) -> tuple[Any, Any]:
    """`_fold` of `_float_words(x)`: a row of float features in one call (compiled)."""
    return _fold(_float_words(x), seeds, steps1, steps2)


class _Compiled(NamedTuple):
    """`_fold`, `_float_words` and `_float_row` compiled by numba: the same source, on uint64 arrays."""

    fold: Callable[..., tuple[Any, Any]]
    float_words: Callable[[np.ndarray], np.ndarray]
    float_row: Callable[..., tuple[Any, Any]]


_FOLD: list[_Compiled | None] = []
_FOLD_LOCK = threading.Lock()


def _compiled() -> _Compiled | None:
    """The compiled functions, None without numba. Made on first use, not at import."""
    with _FOLD_LOCK:
        if not _FOLD:
            try:
                import numba
                from numba.extending import register_jitable
            except ImportError:
                _FOLD.append(None)
            else:
                for f in (_mix, _fold, _float_words):  # callable from compiled code, as they are
                    register_jitable(f)
                jit = numba.njit(cache=True, nogil=True)
                _FOLD.append(_Compiled(jit(_fold), jit(_float_words), jit(_float_row)))
    return _FOLD[0]
