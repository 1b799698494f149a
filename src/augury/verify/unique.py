"""Key uniqueness in bounded memory: how many rows of a predictions file repeat a key, and a few of them.

A store version holds one prediction per key, so a file with a key twice cannot be published; the store
finds out only after loading every row (its unique index). This counter finds it during verification.
A row's key is the text `augury publish` stores (`keys.column_keys`, so ``1`` and ``1.0`` are one key;
a single integer key column is hashed as integers, which is the same equality without making the text).
Each key is hashed to 96 bits (`key_hashes`); per batch the hashes are sorted and equal ones merged with
their count, and the entries (16 bytes) are appended to one of `buckets` spill files chosen by the
hash's top bits. After the pass each spill file is read alone, sorted, and equal hashes summed: a total
above 1 is a repeated key. Only when there are some, a second pass over the key columns finds the text
and first rows of a few of them for the report.

Bounded: memory holds one batch and one spill file. `buckets` is chosen from the file's row count so a
spill file holds about `BUCKET_ROWS` entries (4 MB; its sort takes about as much again), and a key
counts at most once per batch, so however keys repeat no spill file holds more than its share of the
file's distinct (batch, key) pairs. Disk: at most 16 bytes per row, in a temporary folder deleted when
the counter closes; files of up to `BUCKET_ROWS` rows are counted in memory and write nothing.
96 bits: two different keys of a 100-million-row file share a hash with probability about 6e-14.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from augury.keys import column_keys

#: entries per spill file, about (16 bytes each).
BUCKET_ROWS = 1 << 18
#: repeated keys shown in the report, and rows shown per key.
SHOWN, ROWS_SHOWN = 5, 3

_ENTRY = np.dtype([("h", "<u8"), ("l", "<u4"), ("n", "<u4")])  # hash: 64 + 32 bits; count in one batch
_U64 = NDArray[np.uint64]
_U32 = NDArray[np.uint32]
_SEED1, _SEED2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)
_STEP, _MUL = np.uint64(0x165667B19E3779F9), np.uint64(0xFF51AFD7ED558CCD)
#: _BYTES[k] keeps the first k bytes of a little-endian word (the rest of a key's last word is not its own).
_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


@dataclass(frozen=True)
class Duplicate:
    """A key found on more than one row: how many, and its first rows (1-based, at most `ROWS_SHOWN`)."""

    key: str
    count: int
    rows: tuple[int, ...]


@dataclass(frozen=True)
class KeyCount:
    """The keys of a predictions file: rows with a key, rows without one (a null key column), rows that
    repeat a key an earlier row has, the distinct keys repeated, and a few of those."""

    rows: int
    null_rows: int
    repeated_rows: int
    repeated_keys: int
    examples: tuple[Duplicate, ...] = ()


class KeyCounter:
    """Counts the keys of batches read in order (`add`), then repeats (`finish`); use it in a `with`."""

    def __init__(self, key_columns: Sequence[str], expected_rows: int, *,
                 bucket_rows: int = BUCKET_ROWS) -> None:
        self.key_columns = list(key_columns)
        self.buckets = 1 << max(0, math.ceil(math.log2(max(1, expected_rows) / bucket_rows)))
        self._shift = np.uint64(64 - int(math.log2(self.buckets)))
        self._dir: Path | None = None
        self._memory: list[NDArray[np.void]] = []
        self.rows = 0
        self.null_rows = 0

    def __enter__(self) -> KeyCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the spill files (idempotent)."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def add(self, batch: pa.RecordBatch) -> None:
        keys, _ = self._keys(batch)
        if not len(keys):
            return
        h, low = key_hashes(keys)
        entries = _merged(h, low, np.ones(len(h), dtype=np.uint32))
        if self.buckets == 1:
            self._memory.append(entries)
            return
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="augury-verify-keys-"))
        bucket = entries["h"] >> self._shift  # sorted by hash, so each bucket is one slice
        bounds = np.searchsorted(bucket, np.arange(self.buckets + 1, dtype=np.uint64))
        for b in np.flatnonzero(np.diff(bounds)):
            with (self._dir / f"{b}.bin").open("ab") as fh:
                fh.write(entries[bounds[b]: bounds[b + 1]].tobytes())

    def finish(self, again: Callable[[], Iterable[pa.RecordBatch]]) -> KeyCount:
        """The count; with repeats, `again()` streams the key columns once more to show a few of them."""
        repeated_rows = repeated_keys = 0
        wanted: dict[tuple[int, int], int] = {}
        for entries in self._spilled():
            merged = _merged(entries["h"], entries["l"], entries["n"])
            totals = merged["n"].astype(np.int64)  # (a uint32 total could only wrap past 4e9 rows)
            repeated = totals > 1
            repeated_rows += int((totals[repeated] - 1).sum())
            repeated_keys += int(repeated.sum())
            for e in merged[repeated][: SHOWN - len(wanted)]:
                wanted[(int(e["h"]), int(e["l"]))] = int(e["n"])
        examples = self._examples(wanted, again()) if wanted else ()
        return KeyCount(self.rows, self.null_rows, repeated_rows, repeated_keys, examples)

    def _keys(self, batch: pa.RecordBatch, count: bool = True) -> tuple[pa.Array, NDArray[np.intp] | None]:
        """What identifies each row with no null key column (a single integer key column as it is, else
        its store key text), and those rows' positions (None: all); `count`: add them to `rows` and
        `null_rows` (the first pass)."""
        columns = [batch.column(c) for c in self.key_columns]
        rows: NDArray[np.intp] | None = None
        if any(c.null_count for c in columns):
            valid = np.ones(batch.num_rows, dtype=bool)
            for c in columns:
                valid &= c.is_valid().to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(valid)
            columns = [c.take(pa.array(rows)) for c in columns]
        if count:
            self.null_rows += batch.num_rows - len(columns[0])
            self.rows += len(columns[0])
        if len(columns) == 1 and pa.types.is_integer(columns[0].type):
            return columns[0], rows
        batch = pa.RecordBatch.from_arrays(columns, names=self.key_columns)
        return column_keys(batch, self.key_columns), rows

    def _spilled(self) -> Iterable[NDArray[np.void]]:
        if self._memory:
            yield np.concatenate(self._memory)
        if self._dir is not None:
            for b in range(self.buckets):
                path = self._dir / f"{b}.bin"
                if path.exists():
                    yield np.fromfile(path, dtype=_ENTRY)

    def _examples(self, wanted: dict[tuple[int, int], int],
                  batches: Iterable[pa.RecordBatch]) -> tuple[Duplicate, ...]:
        """The text and first rows of the `wanted` hashes, in one more pass (stopped once all are seen)."""
        found: dict[tuple[int, int], tuple[str, list[int]]] = {}
        firsts = np.array([h for h, _ in wanted], dtype=np.uint64)
        start = 0
        for batch in batches:
            keys, rows = self._keys(batch, count=False)
            h, low = key_hashes(keys)
            for i in np.flatnonzero(np.isin(h, firsts)):
                ident = (int(h[i]), int(low[i]))
                if ident in wanted:
                    row = int(i if rows is None else rows[i])
                    text = column_keys(batch.select(self.key_columns).slice(row, 1), self.key_columns)[0]
                    _, seen = found.setdefault(ident, (str(text.as_py()), []))
                    if len(seen) < ROWS_SHOWN:
                        seen.append(start + row + 1)
            start += batch.num_rows
            if all(len(found.get(k, ("", []))[1]) >= min(n, ROWS_SHOWN) for k, n in wanted.items()):
                break
        return tuple(Duplicate(text, wanted[k], tuple(seen)) for k, (text, seen) in found.items())


def _merged(h: _U64, low: _U32, n: _U32) -> NDArray[np.void]:
    """Entries sorted by hash, equal hashes (all 96 bits) merged into one with their counts summed."""
    if not len(h):
        return np.empty(0, dtype=_ENTRY)
    order = np.argsort(h)
    h, low, n = h[order], low[order], n[order]
    same = h[1:] == h[:-1]
    if (same & (low[1:] != low[:-1])).any():  # two keys share 64 bits (about never): order by all 96
        order = np.lexsort((low, h))
        h, low, n = h[order], low[order], n[order]
        same &= low[1:] == low[:-1]
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    out = np.empty(len(starts), dtype=_ENTRY)
    out["h"], out["l"] = h[starts], low[starts]
    out["n"] = np.add.reduceat(n, starts)
    return out


def key_hashes(keys: pa.Array) -> tuple[_U64, _U32]:
    """A 96-bit hash of each value of `keys` (no nulls: integers, or strings), as 64 + 32 bits, from two
    independent 64-bit lanes over the value (strings: over each 8-byte word of the text, length first)."""
    with np.errstate(over="ignore"):
        if pa.types.is_integer(keys.type):
            signed = pa.types.is_signed_integer(keys.type)
            v = np.asarray(keys.cast(pa.int64() if signed else pa.uint64())).view(np.uint64)
            return _fmix(v ^ _SEED1), (_fmix((v ^ _SEED2) * _MUL) >> np.uint64(32)).astype(np.uint32)
        if not pa.types.is_string(keys.type):
            keys = keys.cast(pa.string())
        h1, h2 = _string_lanes(keys)
    return h1, (h2 >> np.uint64(32)).astype(np.uint32)


def _string_lanes(keys: pa.Array) -> tuple[_U64, _U64]:
    """Two 64-bit lanes per string: the first folds each word in by the murmur3 finaliser, the second
    is a polynomial over the words (cheap, and independent of the first), finalised once."""
    n = len(keys)
    _, offsets_buf, data_buf = keys.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[keys.offset: keys.offset + n + 1].astype(np.int64)
    lengths = np.diff(offsets)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    text = data[offsets[0]: offsets[-1]]
    size = lengths.astype(np.uint64)
    h1, h2 = _fmix(_SEED1 ^ size), _SEED2 ^ (size * _MUL)
    longest = int(lengths.max(initial=0))
    if n and int(lengths.min()) == longest:  # one length (hash keys, zero-padded ids): a matrix view
        matrix = np.zeros((n, 8 * math.ceil(longest / 8)), dtype=np.uint8)
        matrix[:, :longest] = text.reshape(n, longest)
        for j, w in enumerate(matrix.view("<u8").T):
            h1 = _fmix(h1 ^ (w + _STEP * np.uint64(j + 1)))
            h2 = (h2 ^ w) * _MUL
        return h1, _fmix(h2)
    padded = np.zeros(len(text) + 8, dtype=np.uint8)
    padded[:-8] = text
    words = np.lib.stride_tricks.as_strided(padded, shape=(len(padded) - 7, 8), strides=(1, 1))
    starts = offsets[:-1] - offsets[0]
    for j in range(math.ceil(longest / 8)):  # word j of the keys that have one, the rest zeroed
        rows = np.flatnonzero(lengths > 8 * j)
        left = np.minimum(lengths[rows] - 8 * j, 8)
        w = np.ascontiguousarray(words[starts[rows] + 8 * j]).view("<u8")[:, 0] & _BYTES[left]
        h1[rows] = _fmix(h1[rows] ^ (w + _STEP * np.uint64(j + 1)))
        h2[rows] = (h2[rows] ^ w) * _MUL
    return h1, _fmix(h2)


def _fmix(h: _U64) -> _U64:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))
