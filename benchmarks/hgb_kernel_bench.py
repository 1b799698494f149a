#!/usr/bin/env python3
"""Scoring a HistGradientBoostingClassifier: scikit-learn's predict_proba vs augury's compiled evaluator.

Model: HistGradientBoostingClassifier, 100 iterations, trained on 20,000 rows of make_classification
(20 features, binary). Scored: held-out rows, in batches of 1, 32, 256 and 32,768 rows, single-threaded
(threadpoolctl limits scikit-learn's OpenMP to one thread; the compiled kernel uses one thread).

For each batch size, µs per call of:
  sklearn predict_proba   ``est.predict_proba(x)`` on a float64 array (probabilities only; no labels)
  augury evaluator=sklearn  ``SklearnModel.predict(batch)``: Arrow batch in, labels and probabilities out,
                            from one pass of scikit-learn's raw scores (numba unavailable)
  augury evaluator=numba    the same, the raw scores from the compiled kernel
  numba kernel, raw only    the compiled kernel's raw scores from the float64 array (no Arrow, no link):
                            what is left is the adapter's Arrow-to-NumPy and back
Each call scores different rows (a pool of distinct batches is cycled through), so the CPU's branch
predictor cannot learn the trees' paths for a repeated input, which would flatter the small batches.
Every answer is checked equal, to the bit, to predict_proba's. Also printed: the time to load the model
file with each evaluator (numba: the first load in a process imports numba and compiles the kernel, or
loads it from numba's disk cache).

Run:  python benchmarks/hgb_kernel_bench.py                # ~0.5 s per measurement
      python benchmarks/hgb_kernel_bench.py --seconds 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pyarrow as pa

SIZES = (1, 32, 256, 32768)


def per_call_us(fn: Callable[[Any], object], pool: list[Any], seconds: float) -> float:
    """Mean µs per call over the pool, cycled for `seconds`; the best of three rounds."""
    fn(pool[0])
    best = float("inf")
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 3 or calls < 2:
            fn(pool[calls % len(pool)])
            calls += 1
        best = min(best, elapsed / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement [0.5]")
    args = parser.parse_args()

    import joblib
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    from augury.models import hgb, load_model

    threadpool_limits(1)
    X, y = make_classification(n_samples=20_000 + 65_536, n_features=20, n_informative=10, n_redundant=5,
                               random_state=0)
    est = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(X[:20_000], y[:20_000])
    held_out = X[20_000:]
    path = Path(tempfile.mkdtemp()) / "hgb.joblib"
    joblib.dump(est, path)

    t0 = time.perf_counter()
    fast = load_model(path)
    t1 = time.perf_counter()
    with mock.patch.object(hgb, "_kernel", lambda: None):  # as if numba were not installed
        plain = load_model(path)
    t2 = time.perf_counter()
    models = {"augury evaluator=sklearn": plain, "augury evaluator=numba": fast}
    for name, model in models.items():
        assert name.endswith("=" + model.info.meta["evaluator"]), (name, model.info.meta)
    scorer = hgb.exact_scorer(est, 20)
    assert scorer is not None and scorer.evaluator == "numba"

    print(f"HistGradientBoostingClassifier, {est.n_iter_} iterations, 20 features; one thread; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"load_model: evaluator=numba {(t1 - t0) * 1e3:.0f} ms (first in this process: imports numba, "
          f"compiles or loads the kernel), evaluator=sklearn {(t2 - t1) * 1e3:.0f} ms\n")
    print(f"{'rows/call':>10} {'method':<26} {'µs/call':>11} {'µs/row':>8} {'vs sklearn':>10}")
    names = [f"f{j}" for j in range(20)]
    for size in SIZES:
        starts = range(0, len(held_out) - size + 1, size)
        arrays = [np.ascontiguousarray(held_out[s:s + size]) for s in list(starts)[:512]]
        batches = [pa.RecordBatch.from_arrays([pa.array(a[:, j]) for j in range(20)], names=names)
                   for a in arrays]
        for model in models.values():
            out = model.predict(batches[-1])
            proba = np.column_stack([out.column(f"proba_{c}").to_numpy() for c in est.classes_])
            assert proba.tobytes() == est.predict_proba(arrays[-1]).tobytes()
        base = per_call_us(est.predict_proba, arrays, args.seconds)
        print(f"{size:>10} {'sklearn predict_proba':<26} {base:>11,.1f} {base / size:>8.2f} {1.0:>9.1f}x")
        for name, model in models.items():
            us = per_call_us(model.predict, batches, args.seconds)
            print(f"{size:>10} {name:<26} {us:>11,.1f} {us / size:>8.2f} {base / us:>9.1f}x", flush=True)
        us = per_call_us(scorer.raw, arrays, args.seconds)
        print(f"{size:>10} {'numba kernel, raw only':<26} {us:>11,.1f} {us / size:>8.2f} {base / us:>9.1f}x")


if __name__ == "__main__":
    main()
