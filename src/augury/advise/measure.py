"""Measuring the model: latency per call across batch sizes, throughput, memory, per-request overhead.

Calls go through the server's steps (rows cast by `cast_row` -> the server's `Scorer.batch` ->
`predict_checked` -> Python values, as `augury.serve.scoring.Scorer` does), on one thread whose BLAS and
OpenMP pools are capped at one thread there, as the server's model thread is (`budget.ModelThread`), and
the model loaded with one thread, as ``augury serve`` loads it. Batch size 1 is called until warm; each
size's first call is not counted.

Batch sizes 1, 2, 4, ... are measured smallest first in two passes (the first may use `FIRST_PASS_SHARE`
of the time, the second measures the same sizes again), each size repeated until its share is spent (at
least `MIN_CALLS` times, at most `MAX_CALLS` per pass); a size whose calls would not fit in what is left
is not started, and the curve is extrapolated from the measured points (linear in the batch size, along
the last measured segment). Slow calls seen in one pass only are interference and left out
(`_without_interference`); the curve is then checked for consistency (`_consistent`); both say what they
did in the notes. A first call that outlives the whole budget is recorded as a lower bound.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from augury.advise.budget import ModelThread
from augury.advise.measurements import LatencyPoint, ModelCost
from augury.errors import MissingExtraError
from augury.keys import row_key
from augury.models import Model, predict_checked
from augury.schema import Schema, cast_row, rows_to_batch

#: calls per batch size: at least (unless the budget is spent) and at most.
MIN_CALLS = 3
MAX_CALLS = 60
#: the largest batch size measured (or extrapolated to).
MAX_BATCH = 4096
#: a warm-up call slower than this counts as a measurement (a slow model has no warm-up to speak of).
WARMUP_COUNTS_S = 0.2
#: warm-up at batch size 1: at most this many calls, and about this share of the measuring time.
WARMUP_CALLS = 30
WARMUP_SHARE = 0.03
#: the first pass over the batch sizes may use this share of the time; the second measures them again.
FIRST_PASS_SHARE = 0.55
#: a call over this many times its size's median is an outlier; outliers of one pass only, at most this
#: share of the calls, are interference (`_without_interference`).
OUTLIER_FACTOR = 3.0
INTERFERENCE_SHARE = 0.05
#: a batch measured more than this factor slower than the next larger one is inconsistent.
CONSISTENT_SLACK = 1.1


@dataclass(frozen=True)
class Measured:
    """The model's cost, and the outputs of the largest batch it scored (rows 0.. of the sample, tiled)."""

    cost: ModelCost
    outputs: pa.RecordBatch | None


def rss_bytes() -> int | None:
    """This process's resident memory (psutil), or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process(os.getpid()).memory_info().rss)


def tiled(batch: pa.RecordBatch, n: int) -> pa.RecordBatch:
    """The first `n` rows of `batch` repeated as often as needed."""
    if batch.num_rows >= n:
        return batch.slice(0, n)
    reps = math.ceil(n / batch.num_rows)
    table = pa.Table.from_batches([batch] * reps).slice(0, n).combine_chunks()
    return table.to_batches()[0] if table.num_rows else batch.slice(0, 0)


def measure_model(model: Model, sample: pa.RecordBatch, thread: ModelThread, deadline: float, *,
                  max_batch: int = MAX_BATCH, rss: int | None = None, load_s: float = 0.0) -> Measured:
    """Measure `model` on `sample` (rows conformed to its input schema) until `deadline` (monotonic)."""
    schema = model.info.inputs
    big = tiled(sample, max_batch)
    rows = _rows(big, schema)
    names = model.info.outputs.names

    to_batch = _server_batcher(model)

    def serve_call(b: int) -> Callable[[], tuple[float, pa.RecordBatch]]:
        part = rows[:b]

        def call() -> tuple[float, pa.RecordBatch]:
            started = time.perf_counter()
            out = predict_checked(model, to_batch(part))
            columns = [out.column(i).to_pylist() for i in range(out.num_columns)]
            answers = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
            seconds = time.perf_counter() - started
            del answers
            return seconds, out

        return call

    sizes = [2**i for i in range(int(math.log2(max_batch)) + 1)]
    started = time.monotonic()
    first = _pass(thread, serve_call, sizes, started + FIRST_PASS_SHARE * (deadline - started), warm=True)
    outputs = first.outputs
    notes: list[str] = []
    points: list[LatencyPoint] = []
    if first.lower_bound is not None:
        waited = first.lower_bound
        points.append(LatencyPoint(1, waited, waited, 0, True, (), lower_bound=True))
        notes.append(f"a call of 1 row(s) had not finished after {waited:.3g} s (the budget): "
                     f"the model is at least that slow")
    else:
        again = _pass(thread, serve_call, list(first.samples), deadline, warm=False)
        outputs = again.outputs or outputs
        for b, samples in first.samples.items():
            kept, note = _without_interference(b, samples, again.samples.get(b, []))
            points.append(LatencyPoint(b, float(np.median(kept)), _p99(kept), len(kept), True, tuple(kept)))
            if note:
                notes.append(note)
        points, fixed = _consistent(points)
        notes.extend(fixed)
    measured = list(points)
    for b in sizes[len(points):]:
        t = _extrapolate(measured, b)
        ratio = measured[-1].p99_s / measured[-1].p50_s if measured[-1].p50_s > 0 else 1.0
        points.append(LatencyPoint(b, t, t * ratio, 0, False))
    if len(measured) < len(sizes) and not measured[-1].lower_bound:
        notes.append(f"the budget allowed batches of up to {measured[-1].batch_size} rows; larger ones are "
                     f"extrapolated (linear in the batch size)")
    throughput = _throughput(model, big, thread, measured, deadline)
    overhead = _overhead(big, schema)
    cost = ModelCost(model.info.name, model.info.version, tuple(points), throughput, rss, load_s, overhead,
                     tuple(notes))
    return Measured(cost, outputs)


@dataclass
class _Pass:
    """One pass over the batch sizes: each measured size's call times, in order; the last outputs; or,
    when the very first call outlived the deadline, how long it was waited for."""

    samples: dict[int, list[float]]
    outputs: pa.RecordBatch | None = None
    lower_bound: float | None = None


def _pass(thread: ModelThread, call: Callable[[int], Callable[[], tuple[float, pa.RecordBatch]]],
          sizes: Sequence[int], deadline: float, *, warm: bool) -> _Pass:
    """Measure `sizes` smallest first until `deadline`, each up to its share of the time left. With
    `warm`, batch size 1 is first called until its times settle (lazy initialisation, caches, the
    allocator: up to `WARMUP_CALLS` calls or `WARMUP_SHARE` of the time); every size's first call is
    not counted either, unless the model is slow (one call over `WARMUP_COUNTS_S`)."""
    out = _Pass({})
    for index, b in enumerate(sizes):
        now = time.monotonic()
        known = [LatencyPoint(s, float(np.median(v)), 0.0, len(v)) for s, v in out.samples.items()]
        guess = _extrapolate(known, b) if known else None
        if guess is not None and now + MIN_CALLS * guess > deadline:
            break
        samples: list[float] = []
        try:
            if warm and index == 0:
                warm_end = now + WARMUP_SHARE * (deadline - now)
                for n in range(WARMUP_CALLS):
                    seconds, out.outputs = thread.run(call(1), deadline - time.monotonic())
                    if seconds > WARMUP_COUNTS_S or deadline - time.monotonic() < seconds:
                        samples.append(seconds)  # a slow model has no warm-up to speak of
                        break
                    if n >= 2 and time.monotonic() > warm_end:
                        break
            elif guess is not None and guess < WARMUP_COUNTS_S:
                thread.run(call(b), deadline - time.monotonic())  # this size's first call: not counted
            now = time.monotonic()
            share_end = now + max((deadline - now) / (len(sizes) - index), (guess or 0.0) * MIN_CALLS)
            while len(samples) < MAX_CALLS:
                left = deadline - time.monotonic()
                if samples and (left < samples[-1] or (len(samples) >= MIN_CALLS
                                                        and time.monotonic() >= share_end)):
                    break
                seconds, out.outputs = thread.run(call(b), left)
                samples.append(seconds)
        except TimeoutError:
            if warm and index == 0 and not samples:
                out.lower_bound = time.monotonic() - now
                break
        if not samples:  # a larger batch outran the time left: the curve is extrapolated from here
            break
        out.samples[b] = samples
    return out


def _without_interference(b: int, first: list[float], again: list[float]) -> tuple[list[float], str | None]:
    """The call times of size `b` from both passes, less outliers that are interference.

    An outlier is a call over `OUTLIER_FACTOR` x the size's median. Outliers seen in one pass only, and
    few (at most `INTERFERENCE_SHARE` of the calls), did not recur when the size was measured again: some
    other work on the machine took the core (seen on a busy 2-core machine: one 30 ms call among sixty of
    0.6 ms, which alone made the one-row p99 50 times the median). They are left out, and said so.
    Outliers in both passes are the model's own (garbage collection, a cache rebuilt): they stay."""
    both = first + again
    median = float(np.median(both))
    cut = OUTLIER_FACTOR * median
    n_first = sum(s > cut for s in first)
    n_again = sum(s > cut for s in again)
    if not again or not (n_first or n_again) or (n_first and n_again) \
            or n_first + n_again > INTERFERENCE_SHARE * len(both):
        return both, None
    kept = [s for s in both if s <= cut]
    worst = max(both)
    return kept, (f"batch {b}: {n_first + n_again} of {len(both)} calls took over {OUTLIER_FACTOR:g} x the "
                  f"median (up to {worst * 1e3:.3g} ms against {median * 1e3:.3g} ms) in one pass only, and "
                  f"did not recur when measured again: left out as interference from other work")


def _consistent(points: list[LatencyPoint]) -> tuple[list[LatencyPoint], list[str]]:
    """The curve made consistent: a batch is never faster than a smaller one (a smaller batch measured
    slower than a larger one takes the larger one's time); inconsistencies are reported."""
    notes: list[str] = []
    out = list(points)
    for i in range(len(out) - 2, -1, -1):
        p, nxt = out[i], out[i + 1]
        if p.p50_s > nxt.p50_s * CONSISTENT_SLACK:
            notes.append(f"batch {p.batch_size} measured slower than batch {nxt.batch_size} "
                         f"({p.p50_s * 1e3:.3g} against {nxt.p50_s * 1e3:.3g} ms at p50): taken as "
                         f"{nxt.p50_s * 1e3:.3g} ms")
            scale = nxt.p50_s / p.p50_s
            out[i] = replace(p, p50_s=nxt.p50_s, p99_s=max(p.p99_s * scale, nxt.p50_s),
                             samples=tuple(s * scale for s in p.samples))
    return out, notes


def _server_batcher(model: Model) -> Callable[[list[list[Any]]], pa.RecordBatch]:
    """How the server turns a batch's rows into one Arrow batch: `augury.serve.scoring.Scorer.batch` (a
    NumPy path for float features) when the serve extra is installed, else `rows_to_batch`, which it
    falls back to. Imported here only: the rest of the advisor does not depend on the server."""
    try:
        from augury.serve.scoring import Scorer
    except (ImportError, MissingExtraError):
        schema = model.info.inputs
        return lambda rows: rows_to_batch(rows, schema)
    return Scorer(model).batch


def _rows(batch: pa.RecordBatch, schema: Schema) -> list[list[Any]]:
    columns = [batch.column(f.name).to_pylist() for f in schema.fields]
    return [list(r) for r in zip(*columns, strict=True)]


def _p99(samples: Sequence[float]) -> float:
    return float(np.percentile(samples, 99)) if len(samples) > 1 else float(samples[0])


def _extrapolate(points: Sequence[LatencyPoint], b: int) -> float:
    """The median call time at `b` from measured points: linear along the last segment (never falling);
    with one point, proportional to the rows."""
    last = points[-1]
    if len(points) == 1 or last.lower_bound:
        return last.p50_s * max(b, last.batch_size) / last.batch_size
    prev = points[-2]
    slope = max((last.p50_s - prev.p50_s) / (last.batch_size - prev.batch_size), 0.0)
    return last.p50_s + slope * (b - last.batch_size)


def _throughput(model: Model, big: pa.RecordBatch, thread: ModelThread, measured: Sequence[LatencyPoint],
                deadline: float) -> float:
    """Rows/s per core at the largest measured batch: the batch runner's path (an Arrow batch straight to
    `predict_checked`) when there is time for it, else the served calls' rate, whichever is higher."""
    last = max(measured, key=lambda p: p.batch_size)
    served = last.batch_size / last.p50_s
    if last.lower_bound or thread.stuck or time.monotonic() + 2 * last.p50_s > deadline:
        return served
    part = big.slice(0, last.batch_size)

    def call() -> float:
        started = time.perf_counter()
        predict_checked(model, part)
        return time.perf_counter() - started

    times: list[float] = []
    try:
        while len(times) < 5 and time.monotonic() + (times[-1] if times else last.p50_s) < deadline:
            times.append(thread.run(call, deadline - time.monotonic()))
    except TimeoutError:
        pass
    return max(served, last.batch_size / float(np.median(times))) if times else served


def _overhead(batch: pa.RecordBatch, schema: Schema, n: int = 200) -> float:
    """Mean seconds per request of the server's work outside the model: cast the example, hash its key.
    A first pass over a few rows is not timed: the first cast in a process takes about 0.3 s (imports
    and first-use setup), which put an XGBoost model's figure at 1,436 us a request, against 11 us
    warm (issue 15, 2026-12-05)."""
    objs = batch.slice(0, n).to_pylist()
    for obj in objs[:5]:
        row_key(cast_row(obj, schema, ignore_unknown=True), schema)
    started = time.perf_counter()
    for obj in objs:
        row_key(cast_row(obj, schema, ignore_unknown=True), schema)
    return (time.perf_counter() - started) / max(len(objs), 1)
