#!/usr/bin/env python3
"""Dynamic batching: N concurrent clients sending one-row requests through `Batcher`, in one process.

Models (20 float64 features, make_classification; a request is one row, a list of 20 floats):
  trivial  y = 2 * f0 per row (measures the batcher's own overhead)
  hgb      HistGradientBoostingClassifier, 100 iterations, trained on 20,000 rows; the wrapper turns
           the rows into a 2-D numpy array and returns (p0, p1) per row from predict_proba
For each model: a baseline scoring one row at a time in a plain loop, no asyncio (trivial: the function
on a one-row list; hgb: `predict_proba` on a 1x20 numpy array),
then the batcher under N asyncio clients (each: submit one row, await it, repeat) for a few
(max_batch_size, max_delay_ms) settings. Reported: requests/s, mean rows per model call, and p50/p99
latency of one request (submit to answer). Each setting runs --seconds after a short warm-up.

Run:  python benchmarks/batcher_bench.py                  # 32 clients, 3 s per setting
      python benchmarks/batcher_bench.py --clients 64 --seconds 5 --omp-threads 1
With 32 clients a max_batch_size of 64 never fills, so each batch waits the whole max_delay_ms: that row
shows the cost of a delay longer than the traffic needs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable

import numpy as np

from augury.serve.batcher import Batcher, BatchObserver

SETTINGS = [(1, 0.0), (8, 1.0), (32, 2.0), (64, 5.0)]


class Sizes(BatchObserver):
    def __init__(self) -> None:
        self.rows = 0
        self.calls = 0

    def batch_scored(self, rows: int, requests: int, inference_s: float) -> None:
        self.rows += rows
        self.calls += 1


Row = list[float]
Model = Callable[[list[Row]], list[object]]


def make_models() -> tuple[list[Row], dict[str, Model], dict[str, Callable[[int], object]]]:
    """The request rows, the batch model functions, and for each one row scored directly (the baseline)."""
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = make_classification(n_samples=22_000, n_features=20, n_informative=10, n_redundant=5,
                               random_state=0)
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(X[:20_000], y[:20_000])
    rows: list[Row] = X[20_000:].tolist()

    def trivial(batch: list[Row]) -> list[object]:
        return [2.0 * r[0] for r in batch]

    def hgb(batch: list[Row]) -> list[object]:
        return [tuple(p) for p in clf.predict_proba(np.array(batch)).tolist()]

    X_test = X[20_000:]
    direct = {"trivial": lambda i: trivial([rows[i]]), "hgb": lambda i: clf.predict_proba(X_test[i:i + 1])}
    return rows, {"trivial": trivial, "hgb": hgb}, direct


def summary(name: str, n: int, seconds: float, lat: list[float], mean_batch: float) -> str:
    p50, p99 = np.percentile(np.array(lat) * 1e3, [50, 99])
    return f"{name:<34} {n / seconds:>10,.0f} {mean_batch:>10.1f} {p50:>9.2f} {p99:>9.2f}"


def one_at_a_time(score_row: Callable[[int], object], n_rows: int, seconds: float) -> str:
    lat: list[float] = []
    for i in range(50):
        score_row(i)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        score_row(len(lat) % n_rows)
        lat.append(time.perf_counter() - t0)
    return summary("one row at a time, plain loop", len(lat), time.perf_counter() - start, lat, 1.0)


async def batched(fn: Model, rows: list[Row], clients: int,
                  seconds: float, max_batch_size: int, max_delay_ms: float) -> str:
    singles = [[r] for r in rows]
    sizes = Sizes()
    batcher: Batcher[Row, object] = Batcher(fn, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                                            observer=sizes)
    lat: list[float] = []
    measuring = False
    stop_at = 0.0

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            await batcher.submit(singles[i % len(singles)])
            if measuring:
                lat.append(time.perf_counter() - t0)
            i += clients

    stop_at = time.perf_counter() + 0.5  # warm-up
    await asyncio.gather(*(client(k) for k in range(clients)))
    sizes.rows = sizes.calls = 0
    measuring, start = True, time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*(client(k) for k in range(clients)))
    elapsed = time.perf_counter() - start
    await batcher.close()
    name = f"batcher max_batch={max_batch_size} delay={max_delay_ms}ms"
    return summary(name, len(lat), elapsed, lat, sizes.rows / max(sizes.calls, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--omp-threads", type=int, help="OMP_NUM_THREADS for the HGB model (default: unset)")
    args = parser.parse_args()
    if args.omp_threads:  # must be set before sklearn loads OpenMP
        os.environ["OMP_NUM_THREADS"] = str(args.omp_threads)
    rows, models, direct = make_models()
    print(f"{args.clients} concurrent clients, one-row requests, {args.seconds:g} s per setting, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name, fn in models.items():
        print(f"\n[{name}]\n{'':<34} {'req/s':>10} {'rows/call':>10} {'p50 ms':>9} {'p99 ms':>9}")
        print(one_at_a_time(direct[name], len(rows), args.seconds), flush=True)
        for size, delay in SETTINGS:
            print(asyncio.run(batched(fn, rows, args.clients, args.seconds, size, delay)), flush=True)


if __name__ == "__main__":
    main()
