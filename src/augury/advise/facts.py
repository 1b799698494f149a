"""The numbers every part of the recommendation uses, resolved once from the measurements and the goals:
the goals as used (given, or assumed and said so), the prices, the dynamic service curve with the
server's own work, the rate one core serves within the target, and the all-dynamic forecast."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from augury.advise import units
from augury.advise.advice import Forecast
from augury.advise.capacity import (
    MAX_CORES,
    best_settings,
    cores_needed,
    lookup_curve,
    max_qps_within,
    service_curve,
    settings_grid,
)
from augury.advise.measurements import Goals, Measurements
from augury.advise.queueing import BatcherSettings, ServiceCurve, simulate
from augury.errors import ConfigError

#: what the advisor assumes when the user does not say.
DEFAULT_QPS = 10.0
DEFAULT_SLO_MS = 100.0
DEFAULT_STALENESS_S = 86_400.0
#: prices when none are given: a cloud vCPU-hour and an SSD GB-month, in the same (any) currency.
DEFAULT_CORE_COST = 0.04
DEFAULT_STORE_COST = 0.10


@dataclass
class Facts:
    """The numbers every option and reason uses. `round_trip_s` is added to every predicted latency (the
    client's round trip, from calibration); `per_core` is the rate one core serves dynamically within the
    target; `need` the cores the whole rate needs (None: more than 64, or the target is out of reach);
    `lookup_curve` and `lookup_per_core` the same for a server answering from the store."""

    m: Measurements
    qps: float
    slo_s: float
    stale_s: float
    cores: int
    core_cost: float
    store_cost: float
    curve: ServiceCurve
    round_trip_s: float
    per_core: float
    need: int | None
    full: Forecast
    score_all_s: float
    share: float | None
    lookup_curve: ServiceCurve
    lookup_per_core: float
    assumptions: list[str] = field(default_factory=list)

    def forecast(self, qps: float, workers: int) -> Forecast:
        return forecast(self.curve, qps, workers, self.slo_s, self.round_trip_s)

    def score_s(self, rows: int) -> float:
        """Seconds to score `rows` on the given cores (batch runs)."""
        return rows / (self.m.model.throughput_rows_s * self.cores)

    def cost_per_day(self, serve_cores: int, refresh_core_s_day: float, store_bytes: float) -> float:
        """Cores held all day, refresh CPU time, and store bytes kept, at the prices."""
        core_hours = serve_cores * 24 + refresh_core_s_day / 3600
        return core_hours * self.core_cost + store_bytes / 1e9 * self.store_cost / 30


def facts(m: Measurements, goals: Goals) -> Facts:
    """The goals resolved (defaults stated as assumptions) and the dynamic-serving numbers."""
    assumptions: list[str] = []
    t = m.traffic
    if goals.qps is not None:
        qps = goals.qps
    elif t is not None and t.observed_qps:
        qps = t.observed_qps
        assumptions.append(f"request rate: {units.rate(qps)}, the traffic log's average (give --qps for "
                           f"the peak you must serve; the log's busiest minute had {units.rate(t.peak_qps)})")
    else:
        qps = DEFAULT_QPS
        assumptions.append(f"request rate: {units.rate(qps)} (none given; use --qps)")
    slo_ms = goals.latency_slo_ms
    if slo_ms is None:
        slo_ms = DEFAULT_SLO_MS
        assumptions.append(f"latency target: p99 <= {slo_ms:g} ms (none given; use --latency-slo-ms)")
    stale_s = goals.max_staleness_s
    if stale_s is None:
        stale_s = DEFAULT_STALENESS_S
        assumptions.append("staleness limit: 1 day (none given; use --max-staleness)")
    core_cost = goals.core_cost if goals.core_cost is not None else DEFAULT_CORE_COST
    store_cost = goals.store_cost if goals.store_cost is not None else DEFAULT_STORE_COST
    if goals.core_cost is None or goals.store_cost is None:
        assumptions.append(f"prices: {core_cost:g} per core-hour, {store_cost:g} per GB-month of store "
                           f"(use --core-cost and --store-cost)")
    if not (qps > 0 and math.isfinite(qps)) or not slo_ms > 0 or not stale_s > 0 or goals.cores < 1 \
            or not (core_cost > 0 and math.isfinite(core_cost)) \
            or not (store_cost >= 0 and math.isfinite(store_cost)):
        raise ConfigError(f"goals must be positive: qps={qps!r}, latency_slo_ms={slo_ms!r}, "
                          f"max_staleness_s={stale_s!r}, cores={goals.cores!r}, core_cost={core_cost!r}, "
                          f"store_cost={store_cost!r}")
    curve = service_curve(m.model, overheads=m.serving)
    slo_s, trip = slo_ms / 1e3, m.serving.round_trip_s
    per_core = max_qps_within(curve, slo_s, overhead_s=trip)
    full = forecast(curve, qps, goals.cores, slo_s, trip)
    need = cores_needed(qps, per_core, max(MAX_CORES, goals.cores))
    if full.holds and (need is None or need > goals.cores):
        need = goals.cores  # the full grid found a setting that the search's smaller grid did not
    lookups = lookup_curve(m.store.lookup_p50_s if m.store else 0.0, m.serving)
    spread = (m.store.lookup_p99_s - m.store.lookup_p50_s) if m.store else 0.0  # the store's own tail
    lookup_per_core = max_qps_within(lookups, slo_s, overhead_s=trip + spread, grid=[BatcherSettings(1, 0.0)])
    return Facts(m, qps, slo_s, stale_s, goals.cores, core_cost, store_cost, curve, trip, per_core, need,
                 full, m.catalogue.catalogue_rows / (m.model.throughput_rows_s * goals.cores),
                 t.catalogue_share if t is not None else None, lookups, lookup_per_core, assumptions)


def forecast(curve: ServiceCurve, qps: float, workers: int, slo_s: float, round_trip_s: float) -> Forecast:
    """Dynamic serving of `qps` on `workers` cores with the batcher settings that minimise p99."""
    grid = settings_grid(curve, slo_s)
    best = best_settings(curve, qps, workers=workers, grid=grid, overhead_s=round_trip_s).settings
    result = simulate(curve, qps, best, workers=workers, overhead_s=round_trip_s)  # more requests
    return Forecast(qps, workers, result, slo_s)
