"""Population stability index (PSI) and the quantile bins it is computed over.

`PSI = sum_i (a_i - e_i) * ln(a_i / e_i)` over bins, where `e_i` is the baseline's share of bin `i` and
`a_i` the new predictions' share; a share below `epsilon` is raised to `epsilon` so an empty bin adds a
large but finite term. The usual reading: < 0.1 no shift, 0.1 to 0.2 a moderate shift, > 0.2 significant.

Numeric bins are defined by sorted cut points `edges` and are open at both ends:
`(-inf, e0), [e0, e1), ..., [e_last, +inf)`, so `len(edges) + 1` bins. `quantile_edges` takes the deciles
of the baseline; a value that holds more than one decile (a point mass, such as many exact zeros) gets a
bin of its own, so mass moving off it is seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def quantile_edges(sample: Floats, bins: int = 10) -> tuple[float, ...]:
    """Cut points splitting the finite `sample` into about `bins` equally populated bins (empty: none)."""
    if sample.size == 0:
        return ()
    qs = np.quantile(sample, np.arange(1, bins) / bins, method="inverted_cdf")
    values, counts = np.unique(qs, return_counts=True)
    edges = set(values.tolist())
    for v, c in zip(values.tolist(), counts.tolist(), strict=True):
        if c > 1:  # a point mass: give it its own bin [v, next float after v)
            edges.add(float(np.nextafter(v, math.inf)))
    return tuple(sorted(edges))


def bin_counts(values: Floats, edges: Sequence[float]) -> npt.NDArray[np.int64]:
    """How many of the finite `values` fall in each of the `len(edges) + 1` bins of `edges`."""
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype(np.int64)


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = 1e-4) -> float:
    """PSI between two share vectors over the same bins (each should sum to 1)."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI needs shares over the same bins ({len(expected)} != {len(actual)})")
    e = np.maximum(np.asarray(expected, dtype=np.float64), epsilon)
    a = np.maximum(np.asarray(actual, dtype=np.float64), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def categorical_psi(expected: Mapping[str, float], actual: Mapping[str, float],
                    epsilon: float = 1e-4) -> float:
    """PSI between two category -> share mappings; a category missing from one side has share 0 there."""
    cats = sorted(set(expected) | set(actual))
    return psi([expected.get(c, 0.0) for c in cats], [actual.get(c, 0.0) for c in cats], epsilon)
