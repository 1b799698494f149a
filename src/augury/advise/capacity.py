"""Sizing dynamic serving with the simulation: best batcher settings, the rate a latency target allows,
the cores a request rate needs, and predicted latency across request rates.

Every function here is deterministic (a fixed seed, and common random numbers across settings, so two
settings are compared on the same arrivals). `predict_latency` is the entry point for checking the
simulation against a real `augury serve` under load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from augury.advise.measurements import ModelCost
from augury.advise.overheads import BUILT_IN, ServingOverheads
from augury.advise.queueing import BatcherSettings, ServiceCurve, SimResult, simulate
from augury.advise.stalls import NO_PAUSES, NONE
from augury.errors import ConfigError

#: batch sizes and delays tried when recommending batcher settings.
GRID_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
GRID_DELAYS_MS = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
#: the smaller grid used inside searches over request rates.
SEARCH_SIZES = (1, 4, 16, 64, 256)
SEARCH_DELAYS_MS = (0.0, 2.0)
#: the most cores the advisor will suggest for one model.
MAX_CORES = 64
#: The server's own work per batch and per request, which shares the worker's core with the model, comes
#: from `augury.advise.overheads`: measured on this machine by `augury advise --calibrate`, else built-in
#: estimates fitted on a 2-core machine (2026-11-25, before the server scored fast models inline).


def service_curve(model: ModelCost, *, jitter: bool = True, serving: bool = True,
                  overheads: ServingOverheads = BUILT_IN) -> ServiceCurve:
    """The time one server worker's core is busy per batch, by batch size: the model's latency curve
    (medians, extrapolated points included) plus, with `serving`, the server's own work per batch (its
    inline or hopping figure, by the model call's time) and per request (`overheads`). With `jitter`,
    each measured size's call times divided by their median (the model's part of a call draws from
    them) and, with `serving`, the core's stalls and the server's own pauses (calibrated). The pauses are
    the server's CPU time, which its per-request cost holds on average too: that part of it is taken out
    where the pauses are drawn, so the worker is as busy as measured."""
    points = sorted(model.latency, key=lambda p: p.batch_size)
    pools: list[tuple[float, ...]] = []
    for p in points:
        pool: tuple[float, ...] = ()
        if jitter and p.measured and len(p.samples) >= 3 and p.p50_s > 0:
            pool = tuple(sorted(s / p.p50_s for s in p.samples))
        pools.append(pool)
    pauses = overheads.pauses_for(points[0].p50_s) if serving and jitter else NO_PAUSES
    per_request = max(overheads.per_request_s - pauses.mean_s, 0.0)
    over = tuple(overheads.per_batch_s(p.p50_s) + per_request * p.batch_size if serving else 0.0
                 for p in points)
    times = tuple(p.p50_s + o for p, o in zip(points, over, strict=True))
    return ServiceCurve(tuple(p.batch_size for p in points), times, tuple(pools) if any(pools) else (),
                        over if serving else (), overheads.stalls if serving and jitter else NONE,
                        overheads.per_wake_s(points[0].p50_s) if serving else 0.0, pauses)


def lookup_curve(lookup_s: float, overheads: ServingOverheads = BUILT_IN) -> ServiceCurve:
    """One server worker answering from the store: each request alone (no batch, no model), the server's
    per-request work and one lookup of `lookup_s` seconds, under the same stalls, pauses and wake-ups as
    a fast model's server (its loop's thread does the work)."""
    pauses = overheads.pauses_for(0.0)
    work = max(overheads.per_request_s - pauses.mean_s, 0.0) + lookup_s
    return ServiceCurve((1,), (max(work, 1e-7),), stalls=overheads.stalls, wake_s=overheads.per_wake_s(0.0),
                        pauses=pauses)


def settings_grid(curve: ServiceCurve, slo_s: float | None = None, *, sizes: Sequence[int] = GRID_SIZES,
                  delays_ms: Sequence[float] = GRID_DELAYS_MS) -> list[BatcherSettings]:
    """Settings worth trying: batch sizes up to the curve's largest whose call fits in the target (a
    longer call cannot meet it), delays under half the target."""
    top = curve.sizes[-1]
    usable = [b for b in sizes if b <= top and (slo_s is None or curve.time(b) <= slo_s)] or [min(sizes)]
    waits = [d for d in delays_ms if slo_s is None or d == 0 or d / 1e3 < slo_s / 2]
    return [BatcherSettings(b, d) for b in usable for d in waits]


def best_settings(curve: ServiceCurve, qps: float, *, workers: int = 1,
                  grid: Sequence[BatcherSettings] | None = None, overhead_s: float = 0.0,
                  requests: int = 5_000, seed: int = 0) -> SimResult:
    """The setting with the lowest simulated p99 at `qps` (within 5 % of it: the largest batch, then the
    shortest delay, for headroom against bursts). If none is stable, the one with the most capacity.

    A batch size the simulation never filled behaves exactly like every larger one, so those are not
    simulated again (same arrivals, same result)."""
    results: list[SimResult] = []
    by_delay: dict[float, list[int]] = {}
    for s in grid or settings_grid(curve):
        by_delay.setdefault(s.max_delay_ms, []).append(s.max_batch_size)
    for delay, sizes in by_delay.items():
        reached: SimResult | None = None
        for b in sorted(sizes):
            if reached is not None:
                results.append(replace(reached, settings=BatcherSettings(b, delay)))
                continue
            r = simulate(curve, qps, BatcherSettings(b, delay), workers=workers, requests=requests,
                         overhead_s=overhead_s, seed=seed)
            results.append(r)
            if r.stable and r.max_batch < b:
                reached = r
    stable = [r for r in results if r.stable]
    if not stable:
        return min(results, key=lambda r: (r.utilisation, r.settings.max_delay_ms))
    best = min(r.p99_s for r in stable)
    near = [r for r in stable if r.p99_s <= best * 1.05]
    return max(near, key=lambda r: (r.settings.max_batch_size, -r.settings.max_delay_ms))


def max_qps_within(curve: ServiceCurve, slo_s: float, *, overhead_s: float = 0.0,
                   grid: Sequence[BatcherSettings] | None = None, requests: int = 3_000,
                   seed: int = 0) -> float:
    """The highest request rate one worker (one core) serves with a simulated p99 <= `slo_s`, under the
    best setting of `grid` for each rate; 0.0 if even a lone request misses the target."""
    if not slo_s > 0:
        raise ConfigError(f"the latency target must be positive, not {slo_s!r}")
    grid = grid or settings_grid(curve, slo_s, sizes=SEARCH_SIZES, delays_ms=SEARCH_DELAYS_MS)
    top = max(curve.capacity(s.max_batch_size) for s in grid)

    def holds(q: float) -> bool:
        return best_settings(curve, q, grid=grid, overhead_s=overhead_s, requests=requests,
                             seed=seed).holds(slo_s)

    lo, hi = top * 1e-4, top * 0.999
    if not holds(lo):
        return 0.0
    if holds(hi):
        return hi
    for _ in range(14):  # bisection on a log scale: the answer to within ~0.1 %
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if holds(mid) else (lo, mid)
    return lo


def cores_needed(qps: float, per_core_qps: float, max_cores: int = MAX_CORES) -> int | None:
    """The fewest cores (one worker each) that serve `qps` within the target, if at most `max_cores`."""
    if per_core_qps <= 0:
        return None
    n = max(1, math.ceil(qps / per_core_qps - 1e-9))
    return n if n <= max_cores else None


def latency_by_rate(curve: ServiceCurve, settings: BatcherSettings, workers: int,
                    rates: Sequence[float], *, overhead_s: float = 0.0,
                    requests: int = 5_000) -> list[SimResult]:
    """Simulated latency at each request rate of `rates` with fixed settings (for the report's plot)."""
    return [simulate(curve, q, settings, workers=workers, requests=requests, overhead_s=overhead_s)
            for q in rates if q > 0]


def rate_grid(qps: float, capacity: float, points: int = 24) -> list[float]:
    """Request rates for a latency-by-rate plot: log-spaced up to the larger of 1.5 x qps and capacity."""
    top = max(qps * 1.5, min(capacity, qps * 20)) if math.isfinite(capacity) else qps * 1.5
    return [float(x) for x in np.geomspace(max(top / 200, 1e-3), top, points)]


def predict_latency(model: ModelCost | ServiceCurve, qps: float, *, max_batch_size: int = 64,
                    max_delay_ms: float = 2.0, workers: int = 1, extra_s: float | None = None,
                    requests: int = 20_000, seed: int = 0,
                    overheads: ServingOverheads = BUILT_IN) -> SimResult:
    """Predicted p50/p99 of dynamic serving at `qps` (Poisson, one row per request) with `augury serve
    --workers W --max-batch-size B --max-delay-ms D`, from a measured `ModelCost` (e.g.
    `advice.measurements.model`, with `advice.measurements.serving` as `overheads`) or a curve.

    A simulation (see `augury.advise.queueing`): compare it with an open-loop load test of the real
    server to know its error. The server's own work comes from `overheads`; the client's round trip is
    `extra_s` seconds per request (by default the calibrated round trip of a trivial request, 0 with the
    built-in estimates)."""
    extra = overheads.round_trip_s if extra_s is None else extra_s
    curve = service_curve(model, overheads=overheads) if isinstance(model, ModelCost) else model
    return simulate(curve, qps, BatcherSettings(max_batch_size, max_delay_ms), workers=workers,
                    requests=requests, overhead_s=extra, seed=seed)
