"""Made-up measurements that put the rule in each of its cases (imported by the advisor's tests)."""

from __future__ import annotations

import numpy as np

from augury.advise import CatalogueStats, LatencyPoint, Measurements, ModelCost, StoreCost, TrafficStats
from augury.advise.traffic import coverage_curve

SIZES = tuple(2**i for i in range(10))


def cost(fixed_s: float, per_row_s: float) -> ModelCost:
    """A model taking `fixed_s` + `per_row_s` x rows per call, exactly."""
    points = tuple(LatencyPoint(b, fixed_s + per_row_s * b, fixed_s + per_row_s * b, 5) for b in SIZES)
    return ModelCost("m", "1", points, SIZES[-1] / points[-1].p50_s)


def traffic(share: float, s: float = 1.1, distinct: int = 100_000, requests: int = 1_000_000) -> TrafficStats:
    """Zipf(s) requests over `distinct` catalogue examples, `share` of all requests; the rest unseen."""
    weights = 1.0 / np.arange(1, distinct + 1) ** s
    counts = np.round(weights / weights.sum() * share * requests)
    return TrafficStats(requests, distinct, share, coverage_curve(counts, requests, cap=share),
                        1 - share, 1 - share)


STORE = StoreCost(45.0, 32_768, 1000, 1000, 8e-6, 2e-5, 1000)


def measurements(model: ModelCost, rows: int, t: TrafficStats | None = None) -> Measurements:
    return Measurements(model, CatalogueStats(rows, rows, rows, "id"), STORE, t)


FAST = cost(0.0003, 0.000005)  # 0.3 ms per call + 5 µs per row
MID = cost(0.001, 0.002)       # 1 ms per call + 2 ms per row
SLOW = cost(0.0, 0.05)         # 50 ms per row
