"""Streaming counters for the gates that need more than the profile, each fed one batch at a time.

Each counter keeps a fixed amount of state (a few numbers per column), so verification runs in bounded
memory whatever the size of the predictions file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from augury.store.base import COMPUTED_AT_COLUMN, MODEL_VERSION_COLUMN
from augury.verify.config import Range
from augury.verify.profile import NumericChunk
from augury.verify.psi import bin_counts

MAX_VERSIONS_SEEN = 10


@dataclass
class RangeCount:
    """Finite values of one column below and above its range."""

    range: Range
    below: int = 0
    above: int = 0


class RangeCounter:
    """Counts, per column, finite values outside the column's `Range`."""

    def __init__(self, ranges: Mapping[str, Range]) -> None:
        self.counts = {name: RangeCount(r) for name, r in ranges.items()}

    def add(self, numeric: Mapping[str, NumericChunk]) -> None:
        for name, c in self.counts.items():
            chunk = numeric.get(name)
            if chunk is not None and chunk.finite.size:
                c.below += int((chunk.finite < c.range.min).sum())
                c.above += int((chunk.finite > c.range.max).sum())


class ProbaSumCounter:
    """Counts rows whose probabilities (all finite) do not sum to 1 within `tolerance`; keeps the worst."""

    def __init__(self, columns: list[str], tolerance: float) -> None:
        self.columns = columns
        self.tolerance = tolerance
        self.rows = 0
        self.off = 0
        self.worst = 0.0
        self.worst_sum: float | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        if not self.columns or not batch.num_rows:
            return
        total = np.zeros(batch.num_rows)
        for name in self.columns:
            total += np.asarray(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        ok = np.isfinite(total)  # rows with a NaN, inf or null probability belong to the finite gate
        dev = np.abs(total[ok] - 1.0)
        self.rows += int(ok.sum())
        self.off += int((dev > self.tolerance).sum())
        if dev.size and float(dev.max()) > self.worst:
            i = int(dev.argmax())
            self.worst = float(dev[i])
            self.worst_sum = float(total[ok][i])


class ProvenanceCounter:
    """Null `model_version`/`computed_at` values, and the distinct model versions (up to a few)."""

    def __init__(self) -> None:
        self.rows = 0
        self.null_versions = 0
        self.null_times = 0
        self.versions: set[str] = set()

    def add(self, batch: pa.RecordBatch) -> None:
        names = batch.schema.names
        self.rows += batch.num_rows
        if MODEL_VERSION_COLUMN in names:
            col = batch.column(MODEL_VERSION_COLUMN)
            self.null_versions += col.null_count
            if len(self.versions) <= MAX_VERSIONS_SEEN:
                self.versions.update(str(v) for v in pc.unique(col).to_pylist() if v is not None)
        if COMPUTED_AT_COLUMN in names:
            self.null_times += batch.column(COMPUTED_AT_COLUMN).null_count


class BinCounter:
    """Counts finite values of each column in fixed bins (the baseline's edges, for drift)."""

    def __init__(self, edges: Mapping[str, tuple[float, ...]]) -> None:
        self.edges = dict(edges)
        self.counts = {name: np.zeros(len(e) + 1, dtype=np.int64) for name, e in self.edges.items()}

    def add(self, numeric: Mapping[str, NumericChunk]) -> None:
        for name, edges in self.edges.items():
            chunk = numeric.get(name)
            if chunk is not None and chunk.finite.size:
                self.counts[name] += bin_counts(chunk.finite, edges)

    def fractions(self, name: str) -> list[float] | None:
        """Share of the column's finite values per bin, or None when it had none."""
        counts = self.counts[name]
        total = int(counts.sum())
        return None if total == 0 else [int(c) / total for c in counts]
