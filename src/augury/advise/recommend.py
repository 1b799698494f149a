"""The recommendation: a pure function of the measurements and the user's goals (docs/advise.md).

Every mode is costed (`options`): the cores its servers hold, the CPU time of the batch runs that keep
its store within the staleness limit, and its store, at the user's prices (`--core-cost`, `--store-cost`);
and checked against every stated constraint (the p99 target at the rate, the staleness limit, every
request answered, the cores given). The rule:

1. Of the modes that meet every constraint, the cheapest per day; but a mode whose predictions are
   verified before they are served (static; a hybrid's head) is preferred while it costs at most
   `VERIFY_PREMIUM` more than the cheapest: among those, the one with the largest verified share (the
   cheapest of those within `VERIFIED_ALIKE` of it).
2. If none meets them all, the mode whose misses weigh least (`options.HARD`: a request unanswered, or a
   target no number of cores holds; `options.CORES`: more cores than given; `options.UNKNOWN`: coverage
   unknown without a log), then the one answering the most requests, then the cheapest; saying what it
   misses.

A hybrid is an option only with a head answering at least `options.HYBRID_MIN_HEAD_SHARE` of requests.
Refresh interval: the staleness limit minus the time to score the head (so no served prediction is older
than the limit), but never less than that scoring time. The store's TTL is the staleness limit.
"""

from __future__ import annotations

import math

from augury.advise import units
from augury.advise.advice import Advice, Plan
from augury.advise.capacity import latency_by_rate, rate_grid
from augury.advise.facts import Facts, facts
from augury.advise.measurements import Goals, Measurements
from augury.advise.options import ModeOption, options, refresh
from augury.advise.queueing import BatcherSettings

#: a verified mode is preferred while it costs at most this share more per day than the cheapest.
VERIFY_PREMIUM = 0.25
#: verified shares this close count as alike (then the cheaper wins).
VERIFIED_ALIKE = 0.01


def recommend(m: Measurements, goals: Goals) -> Advice:
    """Static, dynamic or hybrid for `m` under `goals`, with settings, reasons and limits (pure)."""
    f = facts(m, goals)
    opts = options(f)
    chosen, why = choose(opts)
    build = {"static": _static, "dynamic": _dynamic, "hybrid": _hybrid}[chosen.mode]
    return build(f, chosen, why, opts)


def choose(opts: tuple[ModeOption, ...]) -> tuple[ModeOption, str]:
    """The option the rule picks, and the sentence that says which numbers decided it."""
    real = [o for o in opts if o.available]
    meeting = [o for o in real if o.meets]
    if not meeting:
        best = min(real, key=lambda o: (o.severity, -(o.answered_share or 0.0), o.cost_per_day))
        others = "".join(f"; {o.mode}: {'; '.join(o.misses)}" for o in real if o is not best)
        return best, (f"no mode meets every constraint, and {best.mode} misses the least: "
                      f"{'; '.join(best.misses)}{others}")
    cheapest = min(meeting, key=lambda o: o.cost_per_day)
    close = [o for o in meeting if o.cost_per_day <= cheapest.cost_per_day * (1 + VERIFY_PREMIUM)]
    most = max(o.verified_share for o in close)
    best = min((o for o in close if o.verified_share >= most - VERIFIED_ALIKE),
               key=lambda o: o.cost_per_day)
    out = [o for o in real if not o.meets]
    missing = "".join(f"; {o.mode} does not ({o.misses[0]})" for o in out)
    if best is cheapest:
        dearer = [o for o in meeting if o is not best]
        vs = "".join(f", against {o.mode}'s {_money(o.cost_per_day)} ({_more(o, best)})" for o in dearer)
        return best, (f"it meets every constraint at the lowest cost, {_money(best.cost_per_day)} a day"
                      f"{vs}{missing}")
    return best, (f"it meets every constraint at {_money(best.cost_per_day)} a day, within "
                  f"{units.share(VERIFY_PREMIUM)} of the cheapest ({cheapest.mode}, "
                  f"{_money(cheapest.cost_per_day)}), and {units.share(best.verified_share)} of its answers "
                  f"are verified before they are served ({cheapest.mode}: "
                  f"{units.share(cheapest.verified_share)}){missing}")


#: a load past this many times the cores' capacity is said as a multiple ("49 x"), not "4.9e+03 %".
LOAD_AS_MULTIPLE = 2.0


def _load(utilisation: float) -> str:
    """The share of the cores' capacity a load needs, in words a reader takes in at once."""
    if utilisation >= LOAD_AS_MULTIPLE:
        return f"{utilisation:,.0f} x the cores' capacity" if utilisation >= 10 else \
            f"{utilisation:.2g} x the cores' capacity"
    return f"{units.share(utilisation)} of the cores' capacity"


def _money(x: float) -> str:
    return f"{x:.3g}"


def _more(o: ModeOption, base: ModeOption) -> str:
    if base.cost_per_day <= 0:
        return "more"
    return f"{(o.cost_per_day / base.cost_per_day - 1) * 100:.0f} % more"


def _common_reasons(f: Facts) -> list[str]:
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
        why = (f"the model cannot keep up ({_load(d.utilisation)} needed)"
               if not d.stable else f"simulated p99 {units.duration(d.p99_s)}")
        if f.per_core <= 0:
            more = "even a lone request takes longer than the target, on any number of cores"
        elif f.need is None:
            more = f"it would need about {units.count(math.ceil(f.qps / f.per_core))} cores"
        else:
            more = f"it would hold on {f.need} cores"
        reasons.append(f"Serving all {units.rate(f.qps)} dynamically on {f.cores} core(s) misses {target}: "
                       f"{why}; {more}.")
    n = f.m.catalogue.catalogue_rows
    # the worst staleness, as `options.refresh` tests it (a prediction is served until the next run
    # has scored its replacement: up to twice the scoring time), so this line and static's miss agree
    interval, scoring, _, stale_miss = refresh(f, n)
    fits = (f"so its predictions get up to {units.duration(interval + scoring)} old, past" if stale_miss
            else f"so a run every {units.duration(interval)} keeps its predictions within")
    reasons.append(f"Scoring the whole catalogue ({units.count(n)} examples) takes about "
                   f"{units.duration(scoring)} on {f.cores} core(s) (estimate), {fits} the "
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


def _stale_limits(f: Facts, o: ModeOption) -> list[str]:
    assert o.head_size is not None and o.score_s is not None and o.refresh_interval_s is not None
    if 2 * o.score_s <= f.stale_s:
        return []
    return [f"Scoring {units.count(o.head_size)} examples takes about {units.duration(o.score_s)} on "
            f"{f.cores} core(s), so predictions can be up to {units.duration(o.worst_staleness_s)} old, "
            f"past the {units.duration(f.stale_s)} limit: use more cores for batch runs."]


def _static(f: Facts, o: ModeOption, why: str, opts: tuple[ModeOption, ...]) -> Advice:
    n = f.m.catalogue.catalogue_rows
    assert o.refresh_interval_s is not None
    interval = o.refresh_interval_s
    lookup = (f" (a lookup takes {units.duration(f.m.store.lookup_p99_s)} at p99)" if f.m.store else "")
    plan = Plan(o.serve_cores, head_size=n, head_share=f.share, refresh_interval_s=interval,
                ttl_s=f.stale_s, store_bytes=o.store_bytes if f.m.store else None, score_head_s=o.score_s)
    miss = ("Requests for any other example get no prediction"
            + (f": {units.share(1 - f.share)} of the logged ones." if f.share is not None
               else "; how many there will be is unknown without a traffic log."))
    limits = [f"Static answers only the {units.count(n)} catalogue examples. {miss}",
              f"Predictions are as old as the last batch run: refresh every {units.duration(interval)} and "
              f"publish with --ttl {units.flag(f.stale_s)} so that older ones are never served.",
              *_stale_limits(f, o)]
    summary = (f"Serve statically: score the {units.count(n)} catalogue examples every "
               f"{units.duration(interval)} and answer by key lookup{lookup}.")
    reasons = [*_common_reasons(f), f"So static: {why}."]
    return _advice(f, o, summary, plan, reasons, limits, opts)


def _dynamic(f: Facts, o: ModeOption, why: str, opts: tuple[ModeOption, ...]) -> Advice:
    fc = o.forecast
    assert fc is not None
    workers = fc.workers
    s = fc.result.settings
    plan = Plan(workers, s.max_batch_size, s.max_delay_ms)
    source = "calibrated on this machine" if f.m.serving.calibrated else "built-in estimates"
    limits = ["Dynamic must hold the target under real load: the p99 here is simulated from measured model "
              f"times and the server's own cost per batch and request ({source}); watch the server's "
              "latency and queue metrics and its 503 (shed) responses.",
              (f"Every request runs the model: {workers} core(s) hold the target up to about "
               f"{units.rate(f.per_core * workers)} ({f.per_core * workers / f.qps:.2g} x this rate, "
               f"simulated); past that, latency climbs fast." if f.per_core > 0 else
               f"Every request runs the model, and no request rate holds the "
               f"{units.duration(f.slo_s)} target on any number of cores: even a lone request takes "
               f"longer."),
              "Predictions are computed on request: none is verified before it is served."]
    if not fc.holds:
        limits.insert(0, f"No setting found holds the {units.duration(f.slo_s)} target: predicted p99 "
                         f"{units.duration(fc.result.p99_s)}.")
    extra = f" (more than the {f.cores} given)" if workers > f.cores else ""
    summary = (f"Serve dynamically on {workers} core(s){extra} with --max-batch-size {s.max_batch_size} "
               f"--max-delay-ms {s.max_delay_ms:g}: predicted p99 {units.duration(fc.result.p99_s)} at "
               f"{units.rate(f.qps)} (target {units.duration(f.slo_s)}).")
    reasons = [*_common_reasons(f), f"So dynamic: {why}."]
    return _advice(f, o, summary, plan, reasons, limits, opts)


def _hybrid(f: Facts, o: ModeOption, why: str, opts: tuple[ModeOption, ...]) -> Advice:
    head, covered, interval = o.head_size, o.head_share, o.refresh_interval_s
    assert head is not None and covered is not None and interval is not None
    tail = o.forecast
    settings = o.settings or BatcherSettings()
    plan = Plan(o.serve_cores, settings.max_batch_size, settings.max_delay_ms, head, covered, interval,
                f.stale_s, o.store_bytes if f.m.store else None, o.score_s)
    tail_qps = f.qps * (1 - covered)
    reasons = _common_reasons(f)
    if tail is not None:
        state = "within" if tail.holds else "missing"
        reasons.append(f"Precomputing the {units.count(head)} most requested examples answers "
                       f"{units.share(covered)} of requests from the store; the other {units.rate(tail_qps)} "
                       f"run the model, simulated p99 {units.duration(tail.result.p99_s)} on {tail.workers} "
                       f"core(s), {state} the target.")
    reasons.append(f"So hybrid: {why}.")
    limits = [f"The head is as old as its last batch run: refresh every {units.duration(interval)}, publish "
              f"with --ttl {units.flag(f.stale_s)} (an expired row falls through to the model), and rank "
              f"the head again from recent traffic on each refresh.",
              f"The other {units.share(1 - covered)} of requests ({units.rate(tail_qps)}) run the model, "
              f"unverified, and must hold the target under real load: watch latency, queue and 503 "
              f"metrics.", *_stale_limits(f, o)]
    summary = (f"Serve hybrid: precompute the {units.count(head)} most requested examples "
               f"({units.share(covered)} of requests) every {units.duration(interval)}; compute the rest "
               f"dynamically with --max-batch-size {settings.max_batch_size} --max-delay-ms "
               f"{settings.max_delay_ms:g} on {o.serve_cores} core(s).")
    return _advice(f, o, summary, plan, reasons, limits, opts)


def _advice(f: Facts, o: ModeOption, summary: str, plan: Plan, reasons: list[str], limits: list[str],
            opts: tuple[ModeOption, ...]) -> Advice:
    fc = o.forecast or f.full
    s = (BatcherSettings(plan.max_batch_size, plan.max_delay_ms or 0.0) if plan.max_batch_size
         else f.full.result.settings)
    workers = fc.workers
    top = workers * f.curve.capacity(s.max_batch_size)
    by_rate = latency_by_rate(f.curve, s, workers, rate_grid(fc.qps, top), overhead_s=f.round_trip_s)
    goals = Goals(f.qps, f.slo_s * 1e3, f.stale_s, f.cores, f.core_cost, f.store_cost)
    tail = o.forecast if o.mode == "hybrid" else None
    return Advice(o.mode, summary, plan, tuple(reasons), tuple(limits), tuple(f.assumptions), goals, f.m,
                  f.full, f.per_core, f.need, tail, tuple(by_rate), opts)
