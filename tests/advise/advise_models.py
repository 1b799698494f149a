"""`module:function` models for the advisor's tests (tests/advise/conftest.py puts this folder on sys.path).

Their costs are known by construction (they sleep), so the advisor's decision on them is not in doubt.
`slow` records the rows of each call in `SLOW_CALLS`, so a test can add up the model time the advisor asked
for (its budget) without timing anything; `stuck` blocks until a test sets `RELEASE_STUCK` (or 60 s), so a
test knows the advisor did not wait for it when `advise` returns with the call still running.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from augury.models import function_model

#: rows of each call of `slow`, in order (a test clears it first).
SLOW_CALLS: list[int] = []
#: `stuck` returns once this is set.
RELEASE_STUCK = threading.Event()
#: the schema all of them declare: two float features, one float output.
ab_model = function_model(inputs={"a": "float64", "b": "float64"}, outputs={"value": "float64"}, version="1",
                          task="regression")


#: `slow`'s seconds per row.
SLOW_ROW_S = 0.05


@ab_model
def slow(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """50 ms per example, whatever the batch: batching does not help it."""
    SLOW_CALLS.append(len(batch["a"]))
    time.sleep(SLOW_ROW_S * len(batch["a"]))
    return {"value": batch["a"] + batch["b"]}


@ab_model
def mid(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """1 ms per call plus 2 ms per example: too slow to serve a thousand requests a second on two cores."""
    time.sleep(0.001 + 0.002 * len(batch["a"]))
    return {"value": batch["a"] * batch["b"]}


@ab_model
def stuck(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Blocks until `RELEASE_STUCK` is set (at most 60 s): longer than the small budgets the tests give, so
    only a lower bound is known."""
    RELEASE_STUCK.wait(60.0)
    return {"value": batch["a"]}
