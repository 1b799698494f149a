"""The requests made to every system before its load, and how their answers are judged.

A bare endpoint must answer its constant (`bare_server.PREDICT`, ``LOOKUP``, ``INFER``); augury must
answer the model's probabilities (``predict_proba`` of the body's row, or of the published key's row,
within 1e-6) with a provenance whose ``source`` says where they came from (``dynamic`` or ``static``); a
peer (no provenance) must answer the probabilities of the v1 body's row.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .workload import Workload

TOLERANCE = 1e-6
#: onnxruntime scores float32 inputs; its probabilities differ from predict_proba by ~1e-7 here.
ONNX_TOLERANCE = 1e-5

#: an answer (parsed JSON) -> the problem with it, or None.
Validate = Callable[[Any], str | None]


@dataclass(frozen=True)
class Check:
    """One request made before the load, and what its answer must be (`validate` returns a problem)."""

    method: str
    path: str
    body: Any
    validate: Validate


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _numbers(v)]
    if isinstance(obj, list):
        return [n for v in obj for n in _numbers(v)]
    return []


def _sources(obj: Any) -> list[Any]:
    """Every ``source`` value in the answer's provenance objects."""
    if isinstance(obj, dict):
        own = [obj["source"]] if "source" in obj else []
        return own + [s for v in obj.values() for s in _sources(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _sources(v)]
    return []


def proba(w: Workload, which: str, source: str) -> Validate:
    """The answer holds the model's probabilities (``meta[<which>_expected_proba]``), and its provenance
    says they came from `source`."""
    expected = w.meta[f"{which}_expected_proba"]

    def validate(answer: Any) -> str | None:
        numbers = _numbers(answer)
        if not all(any(abs(n - e) <= TOLERANCE for n in numbers) for e in expected):
            return f"the answer does not hold the model's probabilities {list(expected)}"
        if _sources(answer) != [source]:
            return f"provenance source {_sources(answer)}, expected [{source!r}]"
        return None
    return validate


def proba_only(w: Workload, tolerance: float) -> Validate:
    """A peer's answer (no provenance) holds ``predict_proba`` of the v1 body's row."""
    expected = w.meta["v1_expected_proba"]

    def validate(answer: Any) -> str | None:
        numbers = _numbers(answer)
        if not all(any(abs(n - e) <= tolerance for n in numbers) for e in expected):
            return f"the answer does not hold the model's probabilities {list(expected)} (+- {tolerance:g})"
        return None
    return validate


def equal(constant: Any) -> Validate:
    return lambda answer: None if answer == constant else "not the bare server's constant"


def body(path: Path) -> Any:
    return json.loads(path.read_bytes())
