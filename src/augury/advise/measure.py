"""Measuring the model: latency per call across batch sizes, throughput, memory, per-request overhead.

Calls go through the server's steps (rows cast by `cast_row` -> `rows_to_batch` -> `predict_checked`
-> Python values, as `augury.serve.scoring.Scorer` does), on one thread with one native thread
(`budget.ModelThread`). Batch sizes 1, 2, 4, ... are measured smallest first, each repeated until its
share of the budget is spent (at least `MIN_CALLS` times, at most `MAX_CALLS`); a size whose calls would
not fit in what is left is not started, and the curve is extrapolated from the measured points (linear
in the batch size, along the last measured segment). A first call that outlives the whole budget is
recorded as a lower bound.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from augury.advise.budget import ModelThread
from augury.advise.measurements import LatencyPoint, ModelCost
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
    outputs: pa.RecordBatch | None = None

    def serve_call(b: int) -> Callable[[], tuple[float, pa.RecordBatch]]:
        part = rows[:b]

        def call() -> tuple[float, pa.RecordBatch]:
            started = time.perf_counter()
            out = predict_checked(model, rows_to_batch(part, schema))
            columns = [out.column(i).to_pylist() for i in range(out.num_columns)]
            answers = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
            seconds = time.perf_counter() - started
            del answers
            return seconds, out

        return call

    sizes = [2**i for i in range(int(math.log2(max_batch)) + 1)]
    points: list[LatencyPoint] = []
    notes: list[str] = []
    for index, b in enumerate(sizes):
        now = time.monotonic()
        guess = _extrapolate(points, b) if points else None
        if guess is not None and now + MIN_CALLS * guess > deadline:
            break
        samples: list[float] = []
        share_end = now + max((deadline - now) / (len(sizes) - index), (guess or 0.0) * MIN_CALLS)
        try:
            if index == 0:  # warm-up: the first call pays for lazy initialisation
                seconds, outputs = thread.run(serve_call(1), deadline - time.monotonic())
                if seconds > WARMUP_COUNTS_S or deadline - time.monotonic() < seconds:
                    samples.append(seconds)  # a slow model has no warm-up to speak of, or no time is left
            while len(samples) < MAX_CALLS:
                left = deadline - time.monotonic()
                if samples and (left < samples[-1] or (len(samples) >= MIN_CALLS
                                                        and time.monotonic() >= share_end)):
                    break
                seconds, out = thread.run(serve_call(b), left)
                samples.append(seconds)
                outputs = out
        except TimeoutError:
            waited = time.monotonic() - now
            if index == 0 and not samples:
                points.append(LatencyPoint(b, waited, waited, 0, True, (), lower_bound=True))
                notes.append(f"a call of {b} row(s) had not finished after {waited:.3g} s (the budget): "
                             f"the model is at least that slow")
                break
        if not samples:  # a larger batch outran the time left: the curve is extrapolated from here
            break
        points.append(LatencyPoint(b, float(np.median(samples)), _p99(samples), len(samples), True,
                                   tuple(samples)))
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
    """Mean seconds per request of the server's work outside the model: cast the example, hash its key."""
    objs = batch.slice(0, n).to_pylist()
    started = time.perf_counter()
    for obj in objs:
        row_key(cast_row(obj, schema, ignore_unknown=True), schema)
    return (time.perf_counter() - started) / max(len(objs), 1)
