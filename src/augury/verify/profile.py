"""Distribution summaries of prediction columns, built in one bounded-memory pass.

A `Profile` is what `augury publish` stores with a version (`VersionInfo.profile`, via `to_dict`) so the next
verification computes drift against the active version without reading it. Per numeric column: counts of
finite, NaN, +inf, -inf and null values, the exact min/max/mean of the finite values, and decile bins
(`edges`, see `augury.verify.psi`) with the share of finite values in each. Per categorical column (a
classifier's `label`, string or bool columns): the share of each value among non-null values, keyed by
its text (`augury.keys.key_text`), or `truncated` when it has more than `MAX_CATEGORIES` values.

Bins come from a uniform sample of at most `SAMPLE_VALUES` finite values per column (deterministic: a
fixed seed), so edges and shares are exact up to that many rows and a close estimate beyond.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augury.errors import InputError
from augury.keys import key_text
from augury.verify.psi import Floats, bin_counts, quantile_edges
from augury.verify.source import Layout, PredictionsFile, layout_of, table_batches

PROFILE_FORMAT = 1
BINS = 10
SAMPLE_VALUES = 100_000
SAMPLE_BUDGET = 2_000_000  # sampled values across all columns of one profile
MAX_CATEGORIES = 1_000


@dataclass(frozen=True)
class NumericProfile:
    """Summary of a numeric column: `fractions[i]` is the share of finite values in bin `i` of `edges`."""

    count: int
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    null: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    edges: tuple[float, ...] = ()
    fractions: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "numeric", "count": self.count, "nan": self.nan, "posinf": self.posinf,
                "neginf": self.neginf, "null": self.null, "min": self.min, "max": self.max,
                "mean": _json_float(self.mean), "edges": list(self.edges), "fractions": list(self.fractions)}


@dataclass(frozen=True)
class CategoricalProfile:
    """Summary of a categorical column: the share of each value among its `count` non-null values."""

    count: int
    null: int = 0
    shares: Mapping[str, float] = field(default_factory=dict)
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "count": self.count, "null": self.null,
                "shares": dict(self.shares), "truncated": self.truncated}


ColumnProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True)
class Profile:
    """Row count and per-output-column summaries of one predictions file; JSON-able via `to_dict`."""

    row_count: int
    columns: Mapping[str, ColumnProfile] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PROFILE_FORMAT, "row_count": self.row_count,
                "columns": {name: col.to_dict() for name, col in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Read `to_dict`'s output back; a malformed profile is an `InputError`."""
        try:
            if data.get("format") != PROFILE_FORMAT:
                raise InputError(f"unsupported profile format {data.get('format')!r} "
                                 f"(expected {PROFILE_FORMAT})")
            columns: dict[str, ColumnProfile] = {}
            for name, c in data["columns"].items():
                if c["kind"] == "numeric":
                    num = NumericProfile(
                        int(c["count"]), int(c["nan"]), int(c["posinf"]), int(c["neginf"]), int(c["null"]),
                        _opt_float(c["min"]), _opt_float(c["max"]), _opt_float(c["mean"]),
                        tuple(float(e) for e in c["edges"]), tuple(float(f) for f in c["fractions"]))
                    if len(num.fractions) not in (0, len(num.edges) + 1):
                        raise InputError(f"profile column {name!r}: {len(num.edges)} edges need "
                                         f"{len(num.edges) + 1} fractions, not {len(num.fractions)}")
                    columns[name] = num
                elif c["kind"] == "categorical":
                    columns[name] = CategoricalProfile(int(c["count"]), int(c["null"]),
                                                       {str(k): float(v) for k, v in c["shares"].items()},
                                                       bool(c["truncated"]))
                else:
                    raise InputError(f"profile column {name!r} has unknown kind {c['kind']!r}")
            return cls(int(data["row_count"]), columns)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"malformed profile: {type(exc).__name__}: {exc}") from exc


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _json_float(v: float | None) -> float | None:
    return v if v is None or math.isfinite(v) else None


@dataclass(frozen=True)
class NumericChunk:
    """One batch of a numeric column: its finite values (float64) and counts of the rest."""

    finite: Floats
    nan: int
    posinf: int
    neginf: int
    null: int

    @classmethod
    def of(cls, col: pa.Array) -> NumericChunk:
        null = col.null_count
        if null:
            col = pc.drop_null(col)
        x = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
        ok = np.isfinite(x)
        if ok.all():
            return cls(x, 0, 0, 0, null)
        nan, posinf = int(np.isnan(x).sum()), int((x == math.inf).sum())
        return cls(x[ok], nan, posinf, x.size - int(ok.sum()) - nan - posinf, null)


class _NumericAccumulator:
    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.sample: Floats = np.empty(0)
        self.priority: Floats = np.empty(0)
        self.count = self.nan = self.posinf = self.neginf = self.null = 0
        self.min = math.inf
        self.max = -math.inf
        self.total = 0.0

    def add(self, chunk: NumericChunk) -> None:
        x = chunk.finite
        self.nan += chunk.nan
        self.posinf += chunk.posinf
        self.neginf += chunk.neginf
        self.null += chunk.null
        if not x.size:
            return
        self.count += x.size
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        self.total += float(x.sum())
        # bottom-k sampling: every value gets a random priority; keep the `capacity` smallest.
        prio = self.rng.random(x.size)
        if self.sample.size >= self.capacity:
            keep = prio < self.priority.max()
            x, prio = x[keep], prio[keep]
        sample = np.concatenate([self.sample, x])
        priority = np.concatenate([self.priority, prio])
        if sample.size > self.capacity:
            top = np.argpartition(priority, self.capacity - 1)[: self.capacity]
            sample, priority = sample[top], priority[top]
        self.sample, self.priority = sample, priority

    def finish(self) -> NumericProfile:
        if not self.count:
            return NumericProfile(0, self.nan, self.posinf, self.neginf, self.null)
        edges = quantile_edges(self.sample, BINS)
        counts = bin_counts(self.sample, edges)
        fractions = tuple(float(c) / self.sample.size for c in counts)
        return NumericProfile(self.count, self.nan, self.posinf, self.neginf, self.null, self.min, self.max,
                              self.total / self.count, edges, fractions)


class _CategoricalAccumulator:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.count = self.null = 0
        self.truncated = False

    def add(self, col: pa.Array) -> None:
        self.null += col.null_count
        self.count += len(col) - col.null_count
        if self.truncated or len(col) == col.null_count:
            return
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        vc = pc.value_counts(pc.drop_null(col))
        for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
            k = key_text([v])
            self.counts[k] = self.counts.get(k, 0) + int(c)
        if len(self.counts) > MAX_CATEGORIES:
            self.truncated = True
            self.counts.clear()

    def finish(self) -> CategoricalProfile:
        shares = {k: c / self.count for k, c in sorted(self.counts.items())} if self.count else {}
        return CategoricalProfile(self.count, self.null, shares, self.truncated)


class ProfileBuilder:
    """Accumulates a `Profile` of the output columns of `layout` over a stream of record batches."""

    def __init__(self, layout: Layout) -> None:
        numeric = [o.name for o in layout.outputs if o.kind == "numeric"]
        capacity = max(10_000, min(SAMPLE_VALUES, SAMPLE_BUDGET // max(1, len(numeric))))
        self.rows = 0
        self._numeric = {n: _NumericAccumulator(capacity, seed=i) for i, n in enumerate(numeric)}
        categorical = [o.name for o in layout.outputs if o.kind == "categorical"]
        self._categorical = {n: _CategoricalAccumulator() for n in categorical}

    @property
    def columns(self) -> list[str]:
        """The columns `add` reads."""
        return [*self._numeric, *self._categorical]

    def add(self, batch: pa.RecordBatch, numeric: Mapping[str, NumericChunk] | None = None) -> None:
        """Add `batch`; `numeric` may hold its numeric columns already split by `NumericChunk.of`."""
        self.rows += batch.num_rows
        for name, acc in self._numeric.items():
            acc.add(numeric[name] if numeric is not None else NumericChunk.of(batch.column(name)))
        for name, cat in self._categorical.items():
            cat.add(batch.column(name))

    def finish(self) -> Profile:
        columns: dict[str, ColumnProfile] = {n: a.finish() for n, a in self._numeric.items()}
        columns.update({n: c.finish() for n, c in self._categorical.items()})
        return Profile(self.rows, columns)


def profile_predictions(source: str | Path | pa.Table, outputs: Sequence[str] | None = None) -> Profile:
    """Profile the output columns (or `outputs`) of a predictions file or an in-memory table, in one pass.

    A missing or unreadable file, or an `outputs` name that is not a column, is an `InputError`.
    """
    if isinstance(source, pa.Table):
        _check_outputs(outputs, source.schema)
        builder = ProfileBuilder(layout_of(source.schema, outputs))
        for batch in table_batches(source, builder.columns):
            builder.add(batch)
        return builder.finish()
    with PredictionsFile(source, outputs) as f:
        _check_outputs(outputs, f.schema)
        builder = ProfileBuilder(f.layout)
        for batch in f.batches(builder.columns):
            builder.add(batch)
        return builder.finish()


def _check_outputs(outputs: Sequence[str] | None, schema: pa.Schema) -> None:
    unknown = [n for n in outputs or () if n not in schema.names]
    if unknown:
        raise InputError(f"no column(s) {', '.join(unknown)} to profile")
