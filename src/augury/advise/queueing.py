"""A discrete-event simulation of dynamic serving: Poisson requests, one batcher and model per core.

This is a simulation, not a measurement. It reimplements the batching rule of `augury.serve.batcher`
(advise/ does not import serve/): the loop blocks for the first waiting request, then takes requests in
arrival order until the batch holds `max_batch_size` rows or `max_delay_ms` has passed since it took the
first; if the model is still busy with the previous batch, the new batch waits for it and is topped up,
at the moment the model frees, with whatever arrived meanwhile (up to `max_batch_size`). One batch is in
the model at a time. A batch of b rows occupies the model for the measured latency at batch size b,
interpolated between measured sizes (`ServiceCurve`), optionally with the measured call-to-call jitter
of the model's part, and the core's stalls (`augury.advise.stalls`): while one lasts, the worker neither
takes requests nor scores, and the work it interrupted resumes after it. The server's own pauses, whose
number follows its requests, make a batch longer by its requests' pauses (`Pauses`).

Why a simulation rather than a formula: with batching the service time depends on the queue (a batch
takes what waited), and with stalls the server is an M/G/1 queue with interruptions; the simulation
follows the batcher's own rule, where the closed forms (Pollaczek-Khinchine and its vacation variants)
need one service time per request. 20,000 requests take about 0.1 s.

With `workers` server processes (one per core), requests are spread at random over the workers, so each
sees Poisson arrivals at qps / workers and behaves independently: one worker is simulated at that rate.
If the load exceeds what full batches can serve (utilisation >= 1) the queue grows without bound and the
result says so (`stable` False, infinite latencies) without simulating.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augury.advise.stalls import NO_PAUSES, NONE, Pauses, Stalls, Timeline
from augury.errors import ConfigError


@dataclass(frozen=True)
class BatcherSettings:
    """The batcher's two knobs, as `augury serve` takes them."""

    max_batch_size: int = 64
    max_delay_ms: float = 2.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or not self.max_delay_ms >= 0:
            raise ConfigError(f"batcher needs max_batch_size >= 1 and max_delay_ms >= 0, got "
                              f"{self.max_batch_size} and {self.max_delay_ms}")


@dataclass(frozen=True)
class ServiceCurve:
    """Seconds per model call by batch size: `p50_s[i]` at `sizes[i]` (increasing), linear in between and
    beyond the last size (along the last segment). `jitter[i]` holds call times at `sizes[i]` divided by
    their median; when given, each simulated call draws its factor from the nearest measured size's."""

    sizes: tuple[int, ...]
    p50_s: tuple[float, ...]
    jitter: tuple[tuple[float, ...], ...] = ()
    #: the part of `p50_s[i]` that is the server's own work (not the model's): only the model's part
    #: draws from `jitter`; the server's is its mean CPU time (calibration), the same every call.
    overhead_s: tuple[float, ...] = ()
    #: the core's stalls (from calibration), which the simulation lays over the worker's time.
    stalls: Stalls = NONE
    #: the server's cost to wake its idle loop, added to a batch whose first request found it idle.
    wake_s: float = 0.0
    #: the server's own pauses (from calibration): each request brings one with probability
    #: `per_request`, and a batch takes its requests' pauses longer. Drawn per batch instead (at most one
    #: a batch), a batch of 256 carried one pause where its requests bring 256 times the share: the
    #: advisor put an HGB model's capacity at 156,300-247,900 requests a second per core where its
    #: server's p99 passed 20 ms past about 20,000 (issue 15, 2026-12-05; BENCHMARKS.md).
    pauses: Pauses = NO_PAUSES

    def __post_init__(self) -> None:
        if not self.sizes or len(self.sizes) != len(self.p50_s):
            raise ConfigError("a service curve needs one time per batch size, and at least one size")
        if list(self.sizes) != sorted(set(self.sizes)) or self.sizes[0] < 1:
            raise ConfigError(f"service curve sizes must be increasing and >= 1, not {self.sizes}")
        if any(not (t > 0 and math.isfinite(t)) for t in self.p50_s):
            raise ConfigError("service curve times must be positive and finite")

    def time(self, b: int) -> float:
        """The median seconds of one call at batch size `b` (at least the time at size 1 below it)."""
        sizes, times = self.sizes, self.p50_s
        if len(sizes) == 1:  # one point: assume time proportional to rows above it
            return times[0] * max(b, sizes[0]) / sizes[0]
        if b <= sizes[0]:
            return times[0]
        i = bisect.bisect_left(sizes, b)
        if i < len(sizes) and sizes[i] == b:
            return times[i]
        lo = min(i, len(sizes) - 1) - 1
        slope = (times[lo + 1] - times[lo]) / (sizes[lo + 1] - sizes[lo])
        return max(times[lo] + slope * (b - sizes[lo]), times[0])

    def overhead(self, b: int) -> float:
        """The server's own seconds in a call of `b` rows (interpolated like `time`; 0 if not given)."""
        if len(self.overhead_s) != len(self.sizes):
            return 0.0
        sizes, over = self.sizes, self.overhead_s
        if len(sizes) == 1 or b <= sizes[0]:
            return over[0]
        i = min(bisect.bisect_left(sizes, b), len(sizes) - 1)
        lo = i - 1
        slope = (over[i] - over[lo]) / (sizes[i] - sizes[lo])
        return max(over[lo] + slope * (b - sizes[lo]), 0.0)

    def capacity(self, b: int) -> float:
        """Rows per second one worker serves with full batches of `b` rows: each batch's time and its
        requests' mean pauses, on the share of the core its stalls leave."""
        return b / (self.time(b) + b * self.pauses.mean_s) * (1.0 - self.stalls.share)

    def jitter_pool(self, b: int) -> tuple[float, ...]:
        """The relative call-time factors of the measured size nearest `b` (on a log scale) that has any."""
        have = [j for j in range(min(len(self.jitter), len(self.sizes))) if self.jitter[j]]
        if not have or b < 1:
            return ()
        return self.jitter[min(have, key=lambda j: (abs(math.log(self.sizes[j] / b)), j))]


@dataclass(frozen=True)
class SimResult:
    """Simulated latency (arrival to answer) at one request rate and setting; inf when not `stable`.

    `utilisation` is the rate over the most one worker serves (full batches of `max_batch_size`): at 1 or
    more the queue grows without bound. `busy` is the simulated share of time the model is running; the
    batcher keeps it busy long before it is saturated (batches just grow), so `busy` near 1 is no alarm.
    """

    qps: float
    settings: BatcherSettings
    workers: int
    p50_s: float
    p99_s: float
    mean_s: float
    utilisation: float
    mean_batch: float
    stable: bool
    requests: int
    max_batch: int = 0
    busy: float = 1.0

    def holds(self, slo_s: float) -> bool:
        return self.stable and self.p99_s <= slo_s


def simulate(curve: ServiceCurve, qps: float, settings: BatcherSettings = BatcherSettings(), *,
             workers: int = 1, requests: int = 20_000, overhead_s: float = 0.0, seed: int = 0,
             warmup: float = 0.1) -> SimResult:
    """Simulate `requests` one-row requests arriving at `qps` (Poisson) on `workers` batchers.

    `overhead_s` is added to every request's latency (work outside the model call, e.g. the cast).
    The first `warmup` share of requests is left out of the statistics. Deterministic for a `seed`.
    """
    if not qps > 0 or not math.isfinite(qps):
        raise ConfigError(f"the request rate must be a positive number, not {qps!r}")
    if workers < 1 or requests < 10:
        raise ConfigError("simulate needs workers >= 1 and requests >= 10")
    lam = qps / workers
    big = settings.max_batch_size
    utilisation = lam / curve.capacity(big)
    if utilisation >= 1.0:
        inf = math.inf
        return SimResult(qps, settings, workers, inf, inf, inf, utilisation, float(big), False, 0, big)
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / lam, size=requests))
    ends, sizes = run_batcher(arrivals.tolist(), curve, settings, rng)
    done = np.repeat(np.asarray(ends), np.asarray(sizes))
    latency = (done - arrivals)[int(requests * warmup):] + overhead_s
    service = np.array([curve.time(b) for b in range(big + 1)])
    busy = float(np.sum(service[np.asarray(sizes)]))
    span = float(done[-1] - arrivals[0])
    return SimResult(qps, settings, workers, float(np.percentile(latency, 50)),
                     float(np.percentile(latency, 99)), float(latency.mean()), utilisation,
                     float(np.mean(sizes)), True, requests, int(max(sizes)),
                     min(busy / span, 1.0) if span > 0 else 0.0)


def run_batcher(arr: Sequence[float], curve: ServiceCurve, settings: BatcherSettings,
                rng: np.random.Generator | None = None) -> tuple[list[float], list[int]]:
    """The batching loop over sorted arrival times of one-row requests: each batch's completion time and
    size, in order. `rng` draws the jitter factors and the stalls (the curve's medians alone without it)."""
    n = len(arr)
    big, delay = settings.max_batch_size, settings.max_delay_ms / 1e3
    base = [curve.time(b) for b in range(big + 1)]
    pools = [curve.jitter_pool(b) for b in range(big + 1)] if curve.jitter and rng is not None else []
    draws = rng.random(n).tolist() if pools and rng is not None else []
    over = [curve.overhead(b) for b in range(big + 1)] if pools else []
    # stalls over the arrivals' span and as long again (the queue drains after the last arrival)
    core = Timeline(curve.stalls if rng is not None else NONE, 2 * arr[-1] + 1.0 if n else 0.0,
                    rng if rng is not None else np.random.default_rng(0))
    paused = curve.pauses.per_request > 0 and rng is not None
    if paused and rng is not None:  # drawn after the rest: without pauses, the same draws as before
        hit = rng.random(n) < curve.pauses.per_request
        lasts = np.asarray(curve.pauses.durations_s)[rng.integers(0, len(curve.pauses.durations_s), n)]
        pause_sum = np.concatenate(([0.0], np.cumsum(np.where(hit, lasts, 0.0)))).tolist()  # by request
    ends: list[float] = []
    sizes: list[int] = []
    i, loop_t, free_t = 0, 0.0, 0.0
    while i < n:
        last = i + big  # exclusive bound on the batch
        t0 = core.ready(max(loop_t, arr[i]))  # the loop takes the first waiting request
        j = min(bisect.bisect_right(arr, t0, i), last)
        collect_end = t0
        if j < last and delay > 0:  # wait up to max_delay for company
            k = min(bisect.bisect_right(arr, t0 + delay, j), last)
            collect_end = arr[k - 1] if k == last else t0 + delay
            j = k
        dispatch = core.ready(max(collect_end, free_t))  # the model still busy: wait, then top up
        if j < last and dispatch > collect_end:
            j = min(bisect.bisect_right(arr, dispatch, j), last)
        b = j - i
        s = base[b] + (curve.wake_s if not ends or arr[i] > free_t else 0.0)  # the loop was idle: it wakes
        if pools and pools[b]:
            fixed = over[b]
            s = fixed + (s - fixed) * pools[b][int(draws[len(ends)] * len(pools[b]))]
        if paused:
            s += pause_sum[j] - pause_sum[i]
        free_t = core.finish(dispatch, s)
        ends.append(free_t)
        sizes.append(b)
        loop_t = dispatch
        i = j
    return ends, sizes
