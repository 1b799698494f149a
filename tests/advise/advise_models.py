"""`module:function` models for the advisor's tests (tests/advise/conftest.py puts this folder on sys.path).

Their costs are known by construction (they sleep), so the advisor's decision on them is not in doubt.
"""

from __future__ import annotations

import time

import numpy as np

from augury.models import function_model

#: the schema all of them declare: two float features, one float output.
ab_model = function_model(inputs={"a": "float64", "b": "float64"}, outputs={"value": "float64"}, version="1",
                          task="regression")


@ab_model
def slow(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """50 ms per example, whatever the batch: batching does not help it."""
    time.sleep(0.05 * len(batch["a"]))
    return {"value": batch["a"] + batch["b"]}


@ab_model
def mid(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """1 ms per call plus 2 ms per example: too slow to serve a thousand requests a second on two cores."""
    time.sleep(0.001 + 0.002 * len(batch["a"]))
    return {"value": batch["a"] * batch["b"]}


@ab_model
def stuck(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """1.5 s per call: longer than the small budgets the tests give, so only a lower bound is known."""
    time.sleep(1.5)
    return {"value": batch["a"]}
