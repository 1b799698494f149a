"""What the data plane passes around: a request's examples, and its answers with their provenance.

Every prediction route turns its request into `Example`s and its response from `Answer`s (or, in static
mode among several keys, a `Conflict` in an example's place); `serve.router` makes the answers and
`monitor.tap` hands both to the observers.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import msgspec

from augury.serve.scoring import Row
from augury.store import StoredPrediction
from augury.store.base import iso


class Example(msgspec.Struct, frozen=True):
    """One example of a request: its store key if given, and its features cast to the model's schema
    (None for a pure lookup by key)."""

    key: str | None
    row: Row | None
    #: static mode: the features sent with the key, uncast (the server has no schema of its own; they are
    #: cast by the one the key's store version recorded, to compare them with its features hash)
    sent: Mapping[str, Any] | None = None


class Answer(msgspec.Struct, frozen=True):
    """One prediction: output column -> value, and where it came from."""

    values: Mapping[str, Any]
    provenance: Mapping[str, Any]


class Conflict(msgspec.Struct, frozen=True):
    """Static mode, one example among several: `key` was sent with features other than those its stored
    prediction was computed from, so it is not answered (alone, it would be a `FeaturesChangedError`)."""

    key: str


def static_provenance(hit: StoredPrediction, now: float, evaluator: str | None) -> dict[str, Any]:
    """A stored prediction's provenance (`StoredPrediction.provenance`), with its age in seconds and the
    evaluator its store version recorded."""
    return {"source": "static", "model_version": hit.model_version, "store_version": hit.store_version,
            "computed_at": _iso(hit.computed_at), "age_s": age_s(now, hit.computed_at),
            "evaluator": evaluator}


def age_s(now: float, computed_at: float) -> float:
    """Seconds from `computed_at` to `now`, to the millisecond, never negative (a provenance's ``age_s``).
    As ``round(..., 3)`` but for ties, at a fifth of its cost (100 against 500 ns: a static answer
    kept encoded writes in only this, `serve.lookup_memo`)."""
    return max(0, round((now - computed_at) * 1000)) / 1000


@functools.lru_cache(maxsize=4096)
def _iso(ts: float) -> str | None:
    """`iso`, remembered: the rows of a batch run share a handful of `computed_at` values."""
    return iso(ts)
