"""Stalls: the times a server's core is taken from it, by other work on the machine or the kernel.

A server worker is one core. Whatever else runs there (other processes, the kernel, a noisy neighbour in
a VM) takes the core away for a while, at moments that have nothing to do with the server's load: a stall.
While it lasts the worker serves nothing, and requests arriving meanwhile wait for its end; the work it
interrupted resumes after it (preemptive resume). The advisor models them as a Poisson process in wall
time (`per_s` stalls a second) whose durations are drawn from those measured (`durations_s`).

Why stalls and not a spread of the service time: a stall's cost grows with the load. Of a stall of d
seconds at utilisation rho, the backlog takes d * rho / (1 - rho) more to clear, and every request that
arrived meanwhile waits; at light load a stall delays one request or none. A factor on each call's time
(what the advisor drew before, from the calibration's light-load latencies divided by their mean) cannot
do both: on the shared 2-core VM it put the p99 40-640 % off, in either direction, by the rate (issue 15).

They are measured by `probe`: a thread on the worker's core, the server idle, sleeps `PERIOD_S` again and
again; a wake-up later than `MIN_STALL_S` is a stall, as long as it was late (less the part of the
stall that fell within the sleep: at most one period, well below the stalls that matter). On the shared VM at
load average 3.4: 17 stalls a second over 0.3 ms, 2 % of the time, the longest 4.5 ms.

The server's own pauses happen only while it works, so the idle probe does not see them. They come from
its collector, its other threads and, on a busy machine above all, other work preempting it while it
runs. `Pauses` is the share of requests whose batch takes longer by a measured duration. `pauses_from`
finds them in calibration's loaded phases. Their number follows the work, not the clock. On the 2-core
VM at load average 1.5: 6 a second at 400 req/s and 41 a second at 3,160 req/s, both 1.3-1.5 % of
requests, most 0.3-1 ms. The events over 1 ms came 2 a second at both rates: stalls, which the probe
counts. Without them the predicted p99 stayed flat as the rate grew, while the measured one rose (0.81
-> 1.35 ms at 1,000 -> 3,200 req/s). A model's own pauses are not among them, since the calibration
server's model is tiny. On a quiet VM that server showed none; a 100-tree HistGradientBoosting model's
server showed 0.7-1.2 % (issue 15, BENCHMARKS.md).
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from augury.errors import ConfigError

#: the probe's sleep, and the lateness beyond which a wake-up counts as a stall (a sleeping thread wakes
#: 0.07-0.11 ms late on the 2-core VM, p50-p90, with nothing else to do).
PERIOD_S = 0.0005
MIN_STALL_S = 0.0003


@dataclass(frozen=True)
class Stalls:
    """`per_s` stalls a second of wall time (Poisson), each lasting one of `durations_s` (drawn)."""

    per_s: float
    durations_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_s) and self.per_s >= 0):
            raise ConfigError(f"stalls per second must be 0 or more, not {self.per_s!r}")
        if any(not (math.isfinite(d) and 0 < d < 10) for d in self.durations_s):
            raise ConfigError("stall durations must be positive seconds")
        if self.per_s > 0 and not self.durations_s:
            raise ConfigError("stalls at a rate need durations to draw from")

    @property
    def share(self) -> float:
        """The share of wall time the core is stalled."""
        mean = sum(self.durations_s) / len(self.durations_s) if self.durations_s else 0.0
        return self.per_s * mean / (1 + self.per_s * mean)


NONE = Stalls(0.0, ())

#: a request's batch taking longer than its kind's median by more than this is a pause; by more than
#: `MAX_PAUSE_S`, an event that follows the clock (`pauses_from`).
MIN_PAUSE_S = 0.0003
MAX_PAUSE_S = 0.001
#: a queued request taking more than this led its batch (`excess`); leaders are compared with their own
#: median when they are at least this share of the queued.
FOLLOWER_S = 0.0001
LEADERS = 0.2


@dataclass(frozen=True)
class Pauses:
    """The server's own pauses: each request brings one with probability `per_request`, lasting one of
    `durations_s` (drawn); a batch of b requests takes the pauses its b requests brought longer."""

    per_request: float
    durations_s: tuple[float, ...]

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_request) and 0 <= self.per_request < 1):
            raise ConfigError(f"pauses per request must be a share, not {self.per_request!r}")
        if any(not (math.isfinite(d) and 0 < d < 10) for d in self.durations_s):
            raise ConfigError("pause durations must be positive seconds")
        if self.per_request > 0 and not self.durations_s:
            raise ConfigError("pauses need durations to draw from")

    @property
    def mean_s(self) -> float:
        """The mean pause per request (the server's CPU time, which its per-request cost holds too)."""
        return self.per_request * sum(self.durations_s) / len(self.durations_s) if self.durations_s else 0.0


NO_PAUSES = Pauses(0.0, ())


def excess(sent_s: Sequence[float], received_s: Sequence[float]) -> tuple[np.ndarray, float]:
    """How much longer than usual the server took for each request, from when each was sent and its
    answer received, and the requests a second: in order of the answers, a request starts when it was
    sent or when the answer before it left, whichever is later (one worker answers in order), and what
    it took is compared with the median of its kind (found the server idle, or queued behind another).
    A pause then shows once, on the request it held, not on every request that waited behind it.

    A queued request answered in the same batch as the one before takes next to nothing (its answer is
    written right after: 3-10 us), one that led the next batch takes that batch's time. When those
    leaders (over `FOLLOWER_S`) are a real share of the queued (`LEADERS`), they are compared with their
    own median: a model whose batch takes over 0.3 ms otherwise showed every leader as a pause (a
    LogisticRegression's server: 0.4-0.5 ms a batch, 28-32 % of requests "paused", where the queued
    median, a follower's, was 0.01-0.06 ms). Below that share, batches are too short to tell from the
    answers' writing, and too short to be taken for pauses: the whole kind's median is used."""
    sent, received = np.asarray(sent_s, dtype=float), np.asarray(received_s, dtype=float)
    if len(sent) < 20:
        return np.zeros(0), 0.0
    order = np.argsort(received, kind="stable")
    sent, received = sent[order], received[order]
    before = np.concatenate(([-np.inf], np.maximum.accumulate(received)[:-1]))
    took = received - np.maximum(sent, before)
    idle = sent >= before
    out = np.empty_like(took)
    for kind in (idle, ~idle):
        if kind.any():
            usual = took[kind]
            leaders = usual[usual > FOLLOWER_S]
            if kind is not idle and len(leaders) >= max(LEADERS * len(usual), 20):
                usual = leaders
            out[kind] = took[kind] - np.median(usual)
    span = float(sent.max() - sent.min())
    return out, len(sent) / span if span > 0 else 0.0


def pauses_from(phases: Sequence[tuple[Sequence[float], Sequence[float], float]], stalls: Stalls = NONE,
                min_pause_s: float = MIN_PAUSE_S, max_pause_s: float = MAX_PAUSE_S) -> Pauses:
    """The server's pauses from two or more open-loop phases at different rates (each: when its requests
    were sent, when their answers came, and the share of the time the server was busy): the pauses a
    second in each, less those the core's `stalls` (probed idle, and drawn by the simulation by
    themselves) explain, as a line over the request rate, whose slope is the pauses per request. A
    stall shows as a pause if it takes the core while it works, or if a request arrives while it
    lasts: `busy + (1 - busy) * (1 - exp(-rate * d))` of them, more at a higher rate, which the slope
    would otherwise count twice (at 17 stalls a second, a busy VM's, about 0.4 % of requests). What is
    left and does not grow with the rate follows the clock too. Their durations are those seen, all
    phases together.

    Only pauses up to `max_pause_s` are counted, and the stalls of that length: longer events follow the
    clock (on the 2-core VM they came about 2 a second at 400 and at 3,160 req/s alike), and the stall
    probe counts those. Drawn per request, one 34 ms event seen once in 7,400 requests came back at every
    rate in proportion to it: the predicted p99 was 1.2-6.3 ms against 0.8-1.3 ms measured on a quiet VM,
    and with 200,000 simulated requests in place of 20,000, 7-19 ms (2026-12-05, BENCHMARKS.md)."""
    lasts = np.asarray(stalls.durations_s, dtype=float)
    counted = (lasts > min_pause_s) & (lasts <= max_pause_s)
    stalls_per_s = stalls.per_s * float(counted.mean()) if len(lasts) else 0.0
    lasts = lasts[counted]
    rates, per_s, seen = [], [], []
    for sent, received, busy in phases:
        over, rate = excess(sent, received)
        if rate <= 0:
            continue
        late = over[(over > min_pause_s) & (over <= max_pause_s)]
        shown = float(np.mean(1.0 - np.exp(-rate * lasts))) if len(lasts) else 0.0
        rates.append(rate)
        per_s.append(len(late) / (len(over) / rate) - stalls_per_s * (busy + (1.0 - busy) * shown))
        seen.extend(late.tolist())
    if len(rates) < 2 or max(rates) - min(rates) < 0.2 * max(rates) or not seen:
        return NO_PAUSES
    slope, _ = np.polyfit(np.asarray(rates), np.asarray(per_s), 1)
    share = min(max(float(slope), 0.0), 0.5)
    return Pauses(share, tuple(sorted(seen))) if share > 0 else NO_PAUSES


#: stall probes agree when the most stalled share is at most this many times the least, each share taken
#: as at least `AGREE_FLOOR` (0.5 % of the time: below it stalls move a prediction little, and 1 s probes,
#: a few stalls each, differ by chance: 0.15-0.64 % in five probes of one quiet calibration, 2026-12-05).
AGREE = 3.0
AGREE_FLOOR = 0.005


def agree(probes: list[Stalls]) -> bool:
    """Whether the stall probes saw the same machine: the most stalled share at most `AGREE` times the
    least (each taken as at least `AGREE_FLOOR`, below which stalls move a prediction little)."""
    shares = [max(p.share, AGREE_FLOOR) for p in probes]
    return max(shares) <= AGREE * min(shares)


def settled(probes: list[Stalls]) -> tuple[Stalls, str]:
    """The stalls kept from several probes of one core, and what changed ("" when they `agree`). Probes
    that agree are one probe as long as all of them. Probes that do not saw the machine's load change
    (one calibration taken as another session's benchmark ended predicted p99 15-63 ms against 0.7-1.4
    ms measured minutes later, issue 15): the median probe's are kept, and the answer says so."""
    if agree(probes):
        durations = tuple(sorted(d for p in probes for d in p.durations_s))
        return Stalls(sum(p.per_s for p in probes) / len(probes), durations), ""
    middle = sorted(probes, key=lambda p: p.share)[len(probes) // 2]
    seen = ", ".join(f"{p.share:.2%}" for p in probes)
    return middle, (f"the core was stalled {seen} of the time in {len(probes)} probes, more than {AGREE:g} x "
                    f"apart; the median probe's stalls ({middle.share:.2%}) are kept")


class Timeline:
    """The stalls of one simulated core from time 0 to `horizon`: when it can next work, and when work
    started at some moment ends, stalls skipped."""

    def __init__(self, stalls: Stalls, horizon: float, rng: np.random.Generator) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        if stalls.per_s <= 0 or horizon <= 0:
            return
        pool = np.asarray(stalls.durations_s)
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        t = 0.0
        while t < horizon:  # in blocks (a Python loop per stall took seconds at low rates' long spans)
            n = int((horizon - t) * stalls.per_s * 1.2) + 16
            gaps = rng.exponential(1.0 / stalls.per_s, n)
            lasts = pool[rng.integers(0, len(pool), n)]
            begin = t + np.cumsum(gaps) + np.concatenate(([0.0], np.cumsum(lasts)[:-1]))
            starts.append(begin)
            ends.append(begin + lasts)
            t = float(ends[-1][-1])
        every = np.concatenate(starts)
        keep = every < horizon
        self.starts = every[keep].tolist()
        self.ends = np.concatenate(ends)[keep].tolist()

    def ready(self, t: float) -> float:
        """`t`, or the end of the stall `t` falls in."""
        k = bisect.bisect_right(self.starts, t) - 1
        return self.ends[k] if k >= 0 and t < self.ends[k] else t

    def finish(self, t: float, work: float) -> float:
        """When `work` seconds of the core's time started at `t` (not within a stall) are done."""
        k = bisect.bisect_right(self.starts, t)
        while k < len(self.starts) and self.starts[k] < t + work:
            work -= self.starts[k] - t
            t = self.ends[k]
            k += 1
        return t + work


def probe(seconds: float, core: int | None = None, *, period_s: float = PERIOD_S,
          min_stall_s: float = MIN_STALL_S) -> Stalls:
    """Sleep `period_s` again and again for `seconds` on `core` (this thread moved there meanwhile; None:
    where it is), and count the wake-ups later than `min_stall_s` as stalls. Call it with the core's
    server idle: a busy server's own work would count as stalls."""
    before = os.sched_getaffinity(0) if core is not None and hasattr(os, "sched_setaffinity") else None
    if before is not None:
        os.sched_setaffinity(0, {core})  # type: ignore[arg-type]
    late: list[float] = []
    try:
        started = t = time.perf_counter()
        end = started + seconds
        while t < end:
            time.sleep(period_s)
            now = time.perf_counter()
            if now - t - period_s > min_stall_s:
                late.append(now - t - period_s)
            t = now
        elapsed = t - started
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    stalled = sum(late)
    return Stalls(len(late) / max(elapsed - stalled, 1e-9), tuple(sorted(late)))

