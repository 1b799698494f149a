"""Each mode as an option: what it costs and what it gives, and which stated constraint it misses.

Costs per day, at the prices of `Facts`: the cores a mode's servers hold all day (a server holds its
cores whether busy or not), the CPU time of the batch runs that keep its store within the staleness limit,
and the store's bytes. What it gives: predicted p50/p99 (simulated, for the model and for lookups),
the share of requests it answers, the worst staleness of an answer, and the share of answers verified
before they are served (published predictions pass the verification gates; dynamic ones are not).

The constraints: the p99 target at the request rate, the staleness limit, every request answered, and
the cores given (the servers' and, on average, the refresh runs'). A hybrid is an option only when its
head answers at least `HYBRID_MIN_HEAD_SHARE` of the requests; below that it is a dynamic server with a
store beside it that seldom answers.

A lookup server is sized by the rule dynamic serving is: the highest rate one core serves with the
simulated p99 within the target (`max_qps_within`), here of a "model" that answers each request alone
with the server's per-request work and one store lookup, under the same stalls and pauses. (Until
2026-12-05 a lookup was charged a whole batch's work as well, 247 us with the built-in figures, and its
cores were sized to be at most 70 % busy, where dynamic cores run up to the target: at 20,000 req/s the
advisor put static at 8 cores against dynamic's 2, where a real static server answers 35,720 req/s on
one core against dynamic's 21,801, BENCHMARKS.md.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from augury.advise import units
from augury.advise.advice import Forecast
from augury.advise.capacity import MAX_CORES, cores_needed
from augury.advise.facts import Facts
from augury.advise.queueing import BatcherSettings, simulate
from augury.advise.units import ms, sig

#: static must answer all but this share of the logged requests.
STATIC_MAX_MISS = 0.001
#: the least share of requests a hybrid's head must answer for the hybrid to be an option.
HYBRID_MIN_HEAD_SHARE = 0.20
#: the hybrid's tail may use this share of the dynamic capacity within the target.
TAIL_MARGIN = 0.8
#: refresh runs that keep at most this many cores busy on average fit beside servers that hold every
#: core given (servers sized to a p99 target are seldom fully busy).
REFRESH_SLACK_CORES = 0.05


#: how much a missed constraint weighs when no mode meets them all: requests unanswered, or a target out
#: of reach on any number of cores (times the share of requests affected); more cores than given (to
#: serve, or to refresh in time); not known.
HARD, CORES, UNKNOWN = 100, 10, 1


@dataclass(frozen=True)
class ModeOption:
    """One mode's cost and give. `available` is False for a hybrid with no real head (`misses` says why);
    `misses` lists the stated constraints it does not meet (empty: it meets them all)."""

    mode: str
    available: bool
    misses: tuple[str, ...]
    serve_cores: int
    refresh_core_s_day: float
    store_bytes: float
    p50_s: float | None
    p99_s: float | None
    answered_share: float | None
    worst_staleness_s: float
    verified_share: float
    cost_per_day: float
    head_size: int | None = None
    head_share: float | None = None
    refresh_interval_s: float | None = None
    score_s: float | None = None
    settings: BatcherSettings | None = None
    forecast: Forecast | None = None
    notes: tuple[str, ...] = ()
    severity: float = 0.0

    @property
    def meets(self) -> bool:
        return self.available and not self.misses

    @property
    def verified(self) -> bool:
        return self.verified_share >= 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"available": self.available, "meets_constraints": self.meets, "misses": list(self.misses),
                "serve_cores": self.serve_cores, "serve_core_s_per_day": self.serve_cores * 86_400,
                "refresh_core_s_per_day": sig(self.refresh_core_s_day), "store_bytes": sig(self.store_bytes),
                "p50_ms": ms(self.p50_s), "p99_ms": ms(self.p99_s),
                "answered_share": sig(self.answered_share), "worst_staleness_s": sig(self.worst_staleness_s),
                "verified": self.verified, "verified_share": sig(self.verified_share),
                "cost_per_day": sig(self.cost_per_day), "head_size": self.head_size,
                "head_share": sig(self.head_share), "refresh_interval_s": sig(self.refresh_interval_s),
                "score_s_estimate": sig(self.score_s),
                "max_batch_size": self.settings.max_batch_size if self.settings else None,
                "max_delay_ms": self.settings.max_delay_ms if self.settings else None,
                "notes": list(self.notes)}


def options(f: Facts) -> tuple[ModeOption, ModeOption, ModeOption]:
    """Static, dynamic and hybrid, in that order."""
    return static_option(f), dynamic_option(f), hybrid_option(f)


def refresh(f: Facts, rows: int) -> tuple[float, float, float, str | None]:
    """Refresh interval, scoring time, refresh CPU seconds per day, and a miss if the staleness limit
    cannot be kept: refreshed every (limit - scoring time), never more often than it takes to score."""
    scoring = f.score_s(rows)
    interval = max(f.stale_s - scoring, scoring)
    core_s_day = rows / f.m.model.throughput_rows_s * 86_400 / interval if interval > 0 else math.inf
    miss = None
    if 2 * scoring > f.stale_s:
        miss = (f"scoring {units.count(rows)} examples takes about {units.duration(scoring)} on {f.cores} "
                f"core(s), so predictions get up to {units.duration(interval + scoring)} old, past the "
                f"{units.duration(f.stale_s)} limit")
    return interval, scoring, core_s_day, miss


def _lookups_needed(f: Facts, qps: float) -> tuple[float, int | None]:
    """Cores' worth of lookups for `qps` (each core loaded up to the rate that holds the target), and the
    whole cores that serves them (None: a lone lookup misses the target)."""
    if qps <= 0:
        return 0.0, 0
    if f.lookup_per_core <= 0:
        return math.inf, None
    share = qps / f.lookup_per_core
    return share, max(1, math.ceil(share - 1e-9))


def _lookup_latency(f: Facts, qps: float, cores: int) -> tuple[float, float]:
    """Simulated p50/p99 of lookups at `qps` on `cores` (the round trip and the store's own spread
    added), or a lone lookup's when none is simulated."""
    store = f.m.store
    spread = (store.lookup_p99_s - store.lookup_p50_s) if store else 0.0
    if qps <= 0:
        alone = f.lookup_curve.time(1) + f.lookup_curve.wake_s + f.round_trip_s
        return alone, alone + spread
    if cores < 1 or qps / cores >= f.lookup_curve.capacity(1):  # the queue grows without bound
        return math.inf, math.inf
    r = simulate(f.lookup_curve, qps, BatcherSettings(1, 0.0), workers=cores, overhead_s=f.round_trip_s)
    return r.p50_s, r.p99_s + spread


def _cores_miss(need: int | None, f: Facts, what: str, qps: float, share: float = 1.0
                ) -> tuple[float, str] | None:
    """A miss for `need` cores (None: a lone request misses the target, or more than `MAX_CORES`) to
    serve `qps`, `share` of the requests. More cores than given weighs as much whichever mode needs
    them; only a target out of reach on any number of cores is hard."""
    if need is None:
        if f.per_core <= 0:
            return HARD * share, f"{what}: even a lone request takes longer than the p99 target"
        n = math.ceil(qps / f.per_core - 1e-9)
        return (CORES, f"{what} needs about {units.count(n)} cores, more than the {f.cores} given") \
            if n > f.cores else None
    if need > f.cores:
        return CORES, f"{what} needs {need} cores, more than the {f.cores} given"
    return None


def _refresh_miss(f: Facts, serve_cores: float, core_s_day: float) -> tuple[float, str] | None:
    """A miss when the servers' cores and the refresh runs' (on average) are more than the cores given:
    batch runs score on the given cores too (`Facts.score_s`)."""
    busy = core_s_day / 86_400
    if core_s_day <= 0 or serve_cores + busy <= f.cores + REFRESH_SLACK_CORES:
        return None
    return CORES, (f"the refresh runs keep {busy:.2g} cores busy on average and the servers hold "
                   f"{serve_cores:.3g}: more than the {f.cores} given")


def static_option(f: Facts) -> ModeOption:
    n = f.m.catalogue.catalogue_rows
    interval, scoring, core_s_day, stale_miss = refresh(f, n)
    store = f.m.store.bytes_for(n) if f.m.store else 0.0
    _, need = _lookups_needed(f, f.qps)
    cores = need if need is not None else f.cores
    p50, p99 = _lookup_latency(f, f.qps, cores)
    misses: list[tuple[float, str]] = [(CORES, stale_miss)] if stale_miss else []
    if f.share is None:
        misses.append((UNKNOWN, "whether every request is for a catalogue example is unknown without a "
                                "traffic log"))
    elif f.share < 1 - STATIC_MAX_MISS:
        misses.append((HARD * (1 - f.share), f"it answers only the {units.share(f.share)} of requests "
                                             f"that are for catalogue examples"))
    if cores > f.cores:
        misses.append((CORES, f"looking up {units.rate(f.qps)} needs {cores} cores, more than the "
                              f"{f.cores} given"))
    elif not stale_miss and (refreshing := _refresh_miss(f, cores, core_s_day)):
        misses.append(refreshing)  # (a refresh that cannot keep up is the staleness miss already)
    if need is None:
        misses.append((HARD, "even a lone lookup's p99 is over the target"))
    elif p99 > f.slo_s:  # sized on the search's shorter simulation: a little short, not out of reach
        misses.append((CORES, f"a lookup's p99 on {cores} cores ({units.duration(p99)}) is over the target"))
    return ModeOption("static", True, tuple(t for _, t in misses), cores, core_s_day, store, p50, p99,
                      f.share, interval + scoring, 1.0, f.cost_per_day(cores, core_s_day, store), n, f.share,
                      interval, scoring, severity=sum(k for k, _ in misses))


def dynamic_option(f: Facts) -> ModeOption:
    workers = f.need if f.need is not None else f.cores
    if f.need is None and f.per_core > 0:  # more than MAX_CORES: planned and priced on what it needs
        workers = math.ceil(f.qps / f.per_core - 1e-9)
    fc = f.full if workers == f.cores else f.forecast(f.qps, workers)
    miss = _cores_miss(f.need, f, "serving every request", f.qps)
    r = fc.result
    return ModeOption("dynamic", True, (miss[1],) if miss else (), workers, 0.0, 0.0, r.p50_s, r.p99_s,
                      1.0, 0.0, 0.0, f.cost_per_day(workers, 0.0, 0.0), settings=r.settings, forecast=fc,
                      severity=miss[0] if miss else 0)


def hybrid_option(f: Facts) -> ModeOption:
    t = f.m.traffic
    if t is None or f.share is None:
        return _no_hybrid(f, "without a traffic log there is no head to choose")
    if not t.coverage or t.ranked_keys == 0:
        return _no_hybrid(f, "no logged request is for a catalogue example: a hybrid would have no head")
    capacity = f.per_core * f.cores
    head = t.head_for_share(1 - TAIL_MARGIN * capacity / f.qps)
    if head is None:
        head = t.head_for_share(1 - capacity / f.qps)
    head = max(1, min(max(head if head is not None else t.ranked_keys, t.knee() or 0), t.ranked_keys,
                      f.m.catalogue.catalogue_rows))
    covered = t.share_of_head(head)
    if covered < HYBRID_MIN_HEAD_SHARE:  # the knee (or what the tail needs) answers too little: a larger
        head, why = _real_head(f, head, covered)  # head that answers enough, if one can be kept fresh
        if why:
            return _no_hybrid(f, why)
        covered = t.share_of_head(head)
    interval, scoring, core_s_day, stale_miss = refresh(f, head)
    store = f.m.store.bytes_for(head) if f.m.store else 0.0
    tail_qps = f.qps * (1 - covered)
    need = cores_needed(tail_qps, f.per_core, max(MAX_CORES, f.cores)) if tail_qps > 1e-9 else 0
    lookups, lookup_need = _lookups_needed(f, f.qps * covered)  # cores' worth of lookups
    if f.per_core <= 0 or lookup_need is None:  # the target is out of reach: plan on the cores given
        workers = f.cores
    else:
        workers = max(1, math.ceil(tail_qps / f.per_core + lookups - 1e-9), need or 0)
    misses = [m for m in ((CORES, stale_miss) if stale_miss else None,
                          _cores_miss(need, f, "the requests the head does not answer", tail_qps,
                                      1 - covered)) if m]
    if lookup_need is None:
        misses.append((HARD * covered, "even a lone lookup's p99 is over the target"))
    if need is not None and need <= f.cores < workers:
        misses.append((CORES, f"the tail and the lookups need {workers} cores, more than the {f.cores} "
                              f"given"))
    elif workers <= f.cores and not stale_miss and (refreshing := _refresh_miss(f, workers, core_s_day)):
        misses.append(refreshing)
    tail = f.forecast(tail_qps, need or f.cores) if tail_qps > 1e-9 else None
    l50, l99 = _lookup_latency(f, f.qps * covered, max(workers, 1))
    p50 = l50 if covered >= 0.5 or tail is None else tail.result.p50_s
    p99 = l99 if tail is None or 1 - covered < 0.01 else tail.result.p99_s  # the tail's: an upper bound
    return ModeOption("hybrid", True, tuple(t for _, t in misses), workers, core_s_day, store, p50, p99,
                      1.0, interval + scoring, covered, f.cost_per_day(workers, core_s_day, store), head,
                      covered, interval, scoring, tail.result.settings if tail else None, tail,
                      ("p99 is the tail's (the model's), an upper bound for the mix",),
                      severity=sum(k for k, _ in misses))


def _real_head(f: Facts, head: int, covered: float) -> tuple[int, str]:
    """The smallest head answering `HYBRID_MIN_HEAD_SHARE` of requests, where `head` (the coverage curve's
    knee, or what the tail needs) answers only `covered`; or why there is none: the whole ranked head
    answers less, or the head that answers enough is more than a batch run scores within the staleness
    limit (predictions up to twice its scoring time old, `refresh`). Whether it pays is the rule's."""
    t = f.m.traffic
    assert t is not None
    ranked = min(t.ranked_keys, f.m.catalogue.catalogue_rows)
    need = f"a hybrid needs a head answering at least {units.share(HYBRID_MIN_HEAD_SHARE)}"
    enough = t.head_for_share(HYBRID_MIN_HEAD_SHARE)
    every = (f"all {units.count(ranked)} requested catalogue examples would answer only "
             f"{units.share(t.share_of_head(ranked))} of requests")
    if head >= ranked:
        return head, f"{every}, and {need}"
    knee = " (the coverage curve's knee)" if head == t.knee() else ""
    tried = (f"the {units.count(head)} most requested catalogue examples{knee} would answer only "
             f"{units.share(covered)} of requests, and {need}")
    if enough is None or enough > ranked:
        return head, f"{tried}; {every}"
    fresh = math.floor(f.stale_s / 2 * f.m.model.throughput_rows_s * f.cores)
    if enough > fresh:
        return head, (f"{tried}; that takes the {units.count(enough)} most requested, more than the "
                      f"{units.count(fresh)} a batch run on {f.cores} core(s) keeps within the "
                      f"{units.duration(f.stale_s)} staleness limit")
    return max(enough, 1), ""


def _no_hybrid(f: Facts, why: str) -> ModeOption:
    return ModeOption("hybrid", False, (why,), 0, 0.0, 0.0, None, None, None, 0.0, 0.0, math.inf)
