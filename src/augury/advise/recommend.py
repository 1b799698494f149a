"""The recommendation: a pure function of the measurements and the user's goals (docs/advise.md).

The rule, in order:

1. If serving every request dynamically holds the p99 target at the request rate on the given cores
   (simulated), serve **dynamic**, unless every logged request is for a catalogue example, the whole
   catalogue can be rescored within the staleness limit, and dynamic has little headroom (p99 above half
   the target, or the rate above 70 % of what the cores serve within it): then **static**, which answers
   those requests from the store in microseconds.
2. Otherwise, without a traffic log (coverage unknown): **static** if the catalogue can be rescored
   within the staleness limit; else **dynamic** on the cores it needs, if at most 64 do; else static.
3. Otherwise, if every logged request (>= 99.9 %) is for a catalogue example: **static**.
4. Otherwise **hybrid**: precompute the most requested examples, enough that the rest (the tail) stays
   within 80 % of what dynamic serving handles within the target, and at least up to the knee of the
   coverage curve. If no head is enough (too many requests are for examples outside the catalogue),
   serve **dynamic** on the cores it needs when fewer than half the requests are on the catalogue and
   at most 64 cores do, else hybrid with the whole requested catalogue, saying that the tail misses the
   target and how many cores it would need.

Refresh interval: the staleness limit minus the time to score the head (so no served prediction is older
than the limit), but never less than that scoring time. The store's TTL is the staleness limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from augury.advise import units
from augury.advise.advice import Advice, Forecast, Plan
from augury.advise.capacity import (
    MAX_CORES,
    best_settings,
    cores_needed,
    latency_by_rate,
    max_qps_within,
    rate_grid,
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
#: static when at most this share of logged requests falls outside the catalogue.
STATIC_MAX_MISS = 0.001
#: dynamic has headroom when its p99 is at most this share of the target and the request rate at most
#: this share of the rate the cores serve within the target.
HEADROOM_P99 = 0.5
HEADROOM_LOAD = 0.7
#: the hybrid's tail may use this share of the dynamic capacity within the target.
TAIL_MARGIN = 0.8
#: below this share of requests on the catalogue, a hybrid that cannot meet the target loses to dynamic.
HYBRID_MIN_SHARE = 0.5


@dataclass
class _Facts:
    """The numbers every branch of the rule uses, resolved once."""

    m: Measurements
    qps: float
    slo_s: float
    stale_s: float
    cores: int
    curve: ServiceCurve
    overhead_s: float
    per_core: float
    need: int | None
    full: Forecast
    score_all_s: float
    share: float | None
    assumptions: list[str] = field(default_factory=list)

    def forecast(self, qps: float, workers: int) -> Forecast:
        return _forecast(self.curve, qps, workers, self.slo_s, self.overhead_s)

    def score_s(self, rows: int) -> float:
        return rows / (self.m.model.throughput_rows_s * self.cores)


def recommend(m: Measurements, goals: Goals) -> Advice:
    """Static, dynamic or hybrid for `m` under `goals`, with settings, reasons and limits (pure)."""
    f = _facts(m, goals)
    if f.full.holds:
        comfortable = (f.full.result.p99_s <= HEADROOM_P99 * f.slo_s
                       and f.qps <= HEADROOM_LOAD * f.per_core * f.cores)
        if (f.share is not None and f.share >= 1 - STATIC_MAX_MISS and f.score_all_s <= f.stale_s
                and not comfortable):
            return _static(f, "dynamic would hold the target with little headroom, and every logged "
                              "request is for a catalogue example")
        return _dynamic(f, f.cores)
    if f.share is None:
        if f.score_all_s <= f.stale_s or f.need is None:
            return _static(f, "dynamic serving cannot hold the target here")
        return _dynamic(f, f.need)
    if f.share >= 1 - STATIC_MAX_MISS:
        return _static(f, "dynamic serving cannot hold the target, and every logged request is for a "
                          "catalogue example")
    return _hybrid_or_dynamic(f)


def _facts(m: Measurements, goals: Goals) -> _Facts:
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
    if not (qps > 0 and math.isfinite(qps)) or not slo_ms > 0 or not stale_s > 0 or goals.cores < 1:
        raise ConfigError(f"goals must be positive: qps={qps!r}, latency_slo_ms={slo_ms!r}, "
                          f"max_staleness_s={stale_s!r}, cores={goals.cores!r}")
    curve = service_curve(m.model)
    slo_s, overhead = slo_ms / 1e3, m.model.request_overhead_s
    per_core = max_qps_within(curve, slo_s, overhead_s=overhead)
    full = _forecast(curve, qps, goals.cores, slo_s, overhead)
    need = cores_needed(qps, per_core)
    if full.holds and (need is None or need > goals.cores):
        need = goals.cores  # the full grid found a setting that the search's smaller grid did not
    return _Facts(m, qps, slo_s, stale_s, goals.cores, curve, overhead, per_core, need, full,
                  m.catalogue.catalogue_rows / (m.model.throughput_rows_s * goals.cores),
                  t.catalogue_share if t is not None else None, assumptions)


def _forecast(curve: ServiceCurve, qps: float, workers: int, slo_s: float, overhead_s: float) -> Forecast:
    """Dynamic serving of `qps` on `workers` cores with the batcher settings that minimise p99."""
    grid = settings_grid(curve, slo_s)
    best = best_settings(curve, qps, workers=workers, grid=grid, overhead_s=overhead_s).settings
    result = simulate(curve, qps, best, workers=workers, overhead_s=overhead_s)  # more requests: the figure
    return Forecast(qps, workers, result, slo_s)


def _common_reasons(f: _Facts) -> list[str]:
    mc = f.m.model
    one = min(mc.latency, key=lambda p: p.batch_size)
    slower = " at least" if one.lower_bound else ""
    reasons = [f"One example takes{slower} {units.duration(one.p50_s)} (p99 {units.duration(one.p99_s)}) "
               f"on one core; at its best measured batch size a core scores "
               f"{units.count(mc.throughput_rows_s)} examples/s."]
    d = f.full.result
    target = f"the {units.duration(f.slo_s)} p99 target"
    if f.full.holds:
        reasons.append(f"Serving all {units.rate(f.qps)} dynamically on {f.cores} core(s) holds {target}: "
                       f"simulated p99 {units.duration(d.p99_s)}; these cores hold it up to about "
                       f"{units.rate(f.per_core * f.cores)}.")
    else:
        why = (f"the model cannot keep up ({units.share(d.utilisation)} of the cores' capacity needed)"
               if not d.stable else f"simulated p99 {units.duration(d.p99_s)}")
        if f.per_core <= 0:
            more = "even a lone request takes longer than the target, on any number of cores"
        elif f.need is None:
            more = f"no number of cores up to {MAX_CORES} makes it hold"
        else:
            more = f"it would hold on {f.need} cores"
        reasons.append(f"Serving all {units.rate(f.qps)} dynamically on {f.cores} core(s) misses {target}: "
                       f"{why}; {more}.")
    n = f.m.catalogue.catalogue_rows
    fits = "within" if f.score_all_s <= f.stale_s else "longer than"
    reasons.append(f"Scoring the whole catalogue ({units.count(n)} examples) takes about "
                   f"{units.duration(f.score_all_s)} on {f.cores} core(s) (estimate), {fits} the "
                   f"{units.duration(f.stale_s)} staleness limit.")
    t = f.m.traffic
    if t is None:
        reasons.append("No traffic log: the share of requests that fall on catalogue examples is unknown.")
    else:
        est = " (estimated from the sample)" if t.catalogue_share_estimated else ""
        reasons.append(f"{units.share(t.catalogue_share)} of the {units.count(t.requests)} logged requests "
                       f"are for catalogue examples{est}; {units.share(t.new_share_late)} of the log's "
                       f"second half are for keys not seen before.")
    return reasons


def _refresh(f: _Facts, rows: int) -> tuple[float, float, list[str]]:
    """Refresh interval, time to score `rows`, and a limit if the staleness limit cannot be kept."""
    scoring = f.score_s(rows)
    interval = max(f.stale_s - scoring, scoring)
    limits = []
    if 2 * scoring > f.stale_s:
        limits.append(f"Scoring {units.count(rows)} examples takes about {units.duration(scoring)} on "
                      f"{f.cores} core(s), so predictions can be up to {units.duration(interval + scoring)} "
                      f"old, past the {units.duration(f.stale_s)} limit: use more cores for batch runs.")
    return interval, scoring, limits


def _static(f: _Facts, why: str) -> Advice:
    n = f.m.catalogue.catalogue_rows
    interval, scoring, limits = _refresh(f, n)
    store = f.m.store.bytes_for(n) if f.m.store else None
    lookup = (f" (a lookup takes {units.duration(f.m.store.lookup_p99_s)} at p99)" if f.m.store else "")
    plan = Plan(f.cores, head_size=n, head_share=f.share, refresh_interval_s=interval, ttl_s=f.stale_s,
                store_bytes=store, score_head_s=scoring)
    miss = ("Requests for any other example get no prediction"
            + (f": {units.share(1 - f.share)} of the logged ones." if f.share is not None
               else "; how many there will be is unknown without a traffic log."))
    limits = [f"Static answers only the {units.count(n)} catalogue examples. {miss}",
              f"Predictions are as old as the last batch run: refresh every {units.duration(interval)} and "
              f"publish with --ttl {units.flag(f.stale_s)} so that older ones are never served.",
              *limits]
    summary = (f"Serve statically: score the {units.count(n)} catalogue examples every "
               f"{units.duration(interval)} and answer by key lookup{lookup}.")
    reasons = [*_common_reasons(f), f"So static: {why}."]
    return _advice(f, "static", summary, plan, reasons, limits, None)


def _dynamic(f: _Facts, workers: int, why: str | None = None) -> Advice:
    fc = f.full if workers == f.cores else f.forecast(f.qps, workers)
    s = fc.result.settings
    plan = Plan(workers, s.max_batch_size, s.max_delay_ms)
    limits = ["Dynamic must hold the target under real load: the p99 here is simulated from measured model "
              "times and the server's own cost per batch and request (calibrated on a 2-core machine; the "
              "network is not included); watch the server's latency and queue metrics and its 503 (shed) "
              "responses.",
              f"Every request runs the model: {workers} core(s) hold the target up to about "
              f"{units.rate(f.per_core * workers)} ({f.per_core * workers / f.qps:.2g} x this rate, "
              f"simulated); past that, latency climbs fast."]
    if not fc.holds:
        limits.insert(0, f"No setting found holds the {units.duration(f.slo_s)} target: predicted p99 "
                         f"{units.duration(fc.result.p99_s)}.")
    extra = f" (more than the {f.cores} given)" if workers > f.cores else ""
    summary = (f"Serve dynamically on {workers} core(s){extra} with --max-batch-size {s.max_batch_size} "
               f"--max-delay-ms {s.max_delay_ms:g}: predicted p99 {units.duration(fc.result.p99_s)} at "
               f"{units.rate(f.qps)} (target {units.duration(f.slo_s)}).")
    why = why or "it holds the target and answers every input, always fresh"
    reasons = [*_common_reasons(f), f"So dynamic: {why}."]
    return _advice(f, "dynamic", summary, plan, reasons, limits, None, fc)


def _hybrid_or_dynamic(f: _Facts) -> Advice:
    t = f.m.traffic
    assert t is not None and f.share is not None
    capacity = f.per_core * f.cores
    head = t.head_for_share(1 - TAIL_MARGIN * capacity / f.qps)
    if head is None:
        head = t.head_for_share(1 - capacity / f.qps)
    reachable = head is not None
    if not reachable:
        if f.share < HYBRID_MIN_SHARE and f.need is not None:
            return _dynamic(f, f.need, f"only {units.share(f.share)} of requests are for catalogue examples, "
                                       f"too few for a precomputed head to relieve the model")
        head = t.ranked_keys
    knee = t.knee() or 0
    head = max(1, min(max(head or 0, knee), t.ranked_keys, f.m.catalogue.catalogue_rows))
    covered = t.share_of_head(head)
    tail_qps = f.qps * (1 - covered)
    tail = f.forecast(tail_qps, f.cores) if tail_qps > 1e-9 else None
    settings = tail.result.settings if tail else BatcherSettings()
    interval, scoring, limits = _refresh(f, head)
    store = f.m.store.bytes_for(head) if f.m.store else None
    plan = Plan(f.cores, settings.max_batch_size, settings.max_delay_ms, head, covered, interval, f.stale_s,
                store, scoring)
    reasons = _common_reasons(f)
    if tail is not None and tail.holds:
        reasons.append(f"So hybrid: precomputing the {units.count(head)} most requested examples answers "
                       f"{units.share(covered)} of requests from the store; the other "
                       f"{units.rate(tail_qps)} run the model, simulated p99 "
                       f"{units.duration(tail.result.p99_s)} on {f.cores} core(s), within the target.")
    else:
        tail_need = cores_needed(tail_qps, f.per_core) if tail_qps > 0 else None
        more = (f"it would need {tail_need} cores" if tail_need is not None
                else "no number of cores up to 64 brings it within the target")
        reasons.append(f"So hybrid, though the target cannot be met for every request: even with the "
                       f"{units.count(head)} most requested catalogue examples precomputed "
                       f"({units.share(covered)} of requests), the other {units.rate(tail_qps)} miss the "
                       f"target on {f.cores} core(s); {more}. The store still answers the head at once.")
    limits = [f"The head is as old as its last batch run: refresh every {units.duration(interval)}, publish "
              f"with --ttl {units.flag(f.stale_s)} (an expired row falls through to the model), and rank "
              f"the head again from recent traffic on each refresh.",
              f"The other {units.share(1 - covered)} of requests ({units.rate(tail_qps)}) run the model and "
              f"must hold the target under real load: watch latency, queue and 503 metrics.",
              *limits]
    summary = (f"Serve hybrid: precompute the {units.count(head)} most requested examples "
               f"({units.share(covered)} of requests) every {units.duration(interval)}; compute the rest "
               f"dynamically with --max-batch-size {settings.max_batch_size} --max-delay-ms "
               f"{settings.max_delay_ms:g} on {f.cores} core(s).")
    return _advice(f, "hybrid", summary, plan, reasons, limits, tail)


def _advice(f: _Facts, mode: str, summary: str, plan: Plan, reasons: list[str], limits: list[str],
            tail: Forecast | None, dynamic: Forecast | None = None) -> Advice:
    fc = dynamic or tail or f.full
    s = (BatcherSettings(plan.max_batch_size, plan.max_delay_ms or 0.0) if plan.max_batch_size
         else f.full.result.settings)
    workers = fc.workers
    top = workers * f.curve.capacity(s.max_batch_size)
    by_rate = latency_by_rate(f.curve, s, workers, rate_grid(fc.qps, top), overhead_s=f.overhead_s)
    goals = Goals(f.qps, f.slo_s * 1e3, f.stale_s, f.cores)
    return Advice(mode, summary, plan, tuple(reasons), tuple(limits), tuple(f.assumptions), goals, f.m,
                  f.full, f.per_core, f.need, tail, tuple(by_rate))
