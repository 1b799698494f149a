"""What the advisor measures, as frozen records: the model's cost, the catalogue, the store, the traffic.

`recommend` is a pure function of a `Measurements` and the user's `Goals`, so tests (and anyone who knows
their numbers) can build these by hand instead of measuring. Times are seconds, sizes bytes, shares
fractions in [0, 1]; `to_dict` gives milliseconds and rounded values for people and JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from augury.advise.overheads import BUILT_IN, ServingOverheads
from augury.advise.units import ms, sig


@dataclass(frozen=True)
class LatencyPoint:
    """One batch size's latency per model call. `measured` is False for a point extrapolated from the
    others (the time budget ran out first); `samples` are the measured call times (empty if extrapolated).
    `lower_bound` marks a call that had not finished when the budget ran out: the true time is longer."""

    batch_size: int
    p50_s: float
    p99_s: float
    calls: int
    measured: bool = True
    samples: tuple[float, ...] = ()
    lower_bound: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "p50_ms": ms(self.p50_s), "p99_ms": ms(self.p99_s),
                "calls": self.calls, "measured": self.measured, "lower_bound": self.lower_bound}


@dataclass(frozen=True)
class ModelCost:
    """The model's cost on this machine with one native thread, as the server runs it.

    `latency` covers batch sizes 1, 2, 4, ... (measured, then extrapolated); each call goes through the
    server's steps (cast rows -> one Arrow batch -> `predict_checked` -> Python values).
    `throughput_rows_s` is rows per second per core at the largest measured batch through the batch
    runner's steps; `request_overhead_s` is the per-request cast and key cost outside the model call.
    """

    name: str
    version: str
    latency: tuple[LatencyPoint, ...]
    throughput_rows_s: float
    rss_bytes: int | None = None
    load_s: float = 0.0
    request_overhead_s: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def extrapolated(self) -> bool:
        return any(not p.measured for p in self.latency)

    @property
    def lower_bound(self) -> bool:
        return any(p.lower_bound for p in self.latency)

    @property
    def largest_measured(self) -> int:
        return max((p.batch_size for p in self.latency if p.measured), default=1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "latency": [p.to_dict() for p in self.latency],
            "largest_measured_batch": self.largest_measured,
            "extrapolated": self.extrapolated,
            "throughput_rows_per_s_per_core": sig(self.throughput_rows_s),
            "rss_bytes": self.rss_bytes,
            "load_s": sig(self.load_s),
            "request_overhead_ms": ms(self.request_overhead_s),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CatalogueStats:
    """The examples the model would score ahead of time. `catalogue_rows` is the catalogue's full size
    (the sample's own size unless told otherwise); `key` says how examples are keyed."""

    sample_rows: int
    catalogue_rows: int
    distinct_keys: int
    key: str = "feature hash"
    rejected_rows: int = 0

    @property
    def sampled(self) -> bool:
        return self.catalogue_rows > self.sample_rows

    def to_dict(self) -> dict[str, Any]:
        return {"sample_rows": self.sample_rows, "catalogue_rows": self.catalogue_rows,
                "distinct_keys": self.distinct_keys, "key": self.key, "rejected_rows": self.rejected_rows,
                "sampled": self.sampled}


@dataclass(frozen=True)
class StoreCost:
    """The prediction store this catalogue needs, measured on a temporary SQLite store.

    `bytes_per_prediction` is the file's growth per published row; `base_bytes` the size of an empty
    store; lookups are single-key `get_many` calls on the temporary store (a warm page cache)."""

    bytes_per_prediction: float
    base_bytes: int
    rows_published: int
    rows_scored: int
    lookup_p50_s: float
    lookup_p99_s: float
    lookups: int

    def bytes_for(self, rows: int) -> float:
        return self.base_bytes + self.bytes_per_prediction * rows

    def to_dict(self) -> dict[str, Any]:
        return {"bytes_per_prediction": sig(self.bytes_per_prediction), "base_bytes": self.base_bytes,
                "rows_published": self.rows_published, "rows_scored": self.rows_scored,
                "lookup_p50_us": sig(self.lookup_p50_s * 1e6), "lookup_p99_us": sig(self.lookup_p99_s * 1e6),
                "lookups": self.lookups}


@dataclass(frozen=True)
class CoveragePoint:
    """Precomputing the `head` most requested catalogue examples answers `share` of the requests."""

    head: int
    share: float


@dataclass(frozen=True)
class HourStat:
    """One hour of the log: its start (Unix seconds), requests, and the share for never-seen keys."""

    start_s: float
    requests: int
    new_share: float


@dataclass(frozen=True)
class TrafficStats:
    """What the traffic log says about requests.

    `catalogue_share` is the share of requests for examples of the catalogue (estimated from the sample
    when the catalogue was sampled: `catalogue_share_estimated`). `coverage` is the curve top-k -> share
    of all requests, rising to `catalogue_share`. `new_share` is the share of requests, in the log's time
    order, for a key not seen earlier in the log; `new_share_late` the same over its second half (less
    inflated by the log's start, when every key is new)."""

    requests: int
    distinct_keys: int
    catalogue_share: float
    coverage: tuple[CoveragePoint, ...]
    new_share: float
    new_share_late: float
    key: str = "feature hash"
    catalogue_share_estimated: bool = False
    hourly: tuple[HourStat, ...] = ()
    observed_qps: float | None = None
    peak_qps: float | None = None
    span_s: float | None = None
    rejected_rows: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ranked_keys(self) -> int:
        """How many catalogue examples the log ranks (those requested at least once)."""
        return self.coverage[-1].head if self.coverage else 0

    def share_of_head(self, head: int) -> float:
        """The share of requests the `head` most requested catalogue examples answer (interpolated)."""
        if head <= 0 or not self.coverage:
            return 0.0
        prev = CoveragePoint(0, 0.0)
        for p in self.coverage:
            if head <= p.head:
                frac = (head - prev.head) / (p.head - prev.head) if p.head > prev.head else 1.0
                return prev.share + frac * (p.share - prev.share)
            prev = p
        return self.catalogue_share

    def head_for_share(self, target: float) -> int | None:
        """The smallest head answering at least `target` of the requests; None if none can."""
        if target <= 0:
            return 0
        prev = CoveragePoint(0, 0.0)
        for p in self.coverage:
            if p.share >= target - 1e-12:
                if p.share <= prev.share:
                    return p.head
                frac = (target - prev.share) / (p.share - prev.share)
                return max(1, min(p.head, math.ceil(prev.head + frac * (p.head - prev.head))))
            prev = p
        return None

    def knee(self) -> int | None:
        """The knee of the coverage curve (Kneedle on linear axes): past it, each extra precomputed example
        answers fewer requests than the curve's average. None without coverage."""
        if len(self.coverage) < 3 or self.catalogue_share <= 0:
            return None
        top = self.coverage[-1].head
        best = max(self.coverage, key=lambda p: p.share / self.catalogue_share - p.head / top)
        return best.head

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "distinct_keys": self.distinct_keys,
            "key": self.key,
            "catalogue_share": sig(self.catalogue_share),
            "catalogue_share_estimated": self.catalogue_share_estimated,
            "coverage": [{"head": p.head, "share": sig(p.share)} for p in self.coverage],
            "knee": self.knee(),
            "new_share": sig(self.new_share),
            "new_share_late": sig(self.new_share_late),
            "hourly": [{"start_s": h.start_s, "requests": h.requests, "new_share": sig(h.new_share)}
                       for h in self.hourly],
            "observed_qps": sig(self.observed_qps),
            "peak_qps_1min": sig(self.peak_qps),
            "span_s": sig(self.span_s),
            "rejected_rows": self.rejected_rows,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Measurements:
    """Everything measured for one advice. `store` and `traffic` are None when not measured; `serving` is
    the server's own cost the latency prediction adds (calibrated on this machine, or built-in)."""

    model: ModelCost
    catalogue: CatalogueStats
    store: StoreCost | None = None
    traffic: TrafficStats | None = None
    budget_s: float = 0.0
    spent_s: float = 0.0
    serving: ServingOverheads = BUILT_IN

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "catalogue": self.catalogue.to_dict(),
            "store": self.store.to_dict() if self.store else None,
            "traffic": self.traffic.to_dict() if self.traffic else None,
            "budget_s": sig(self.budget_s),
            "spent_s": sig(self.spent_s),
            "serving_overheads": self.serving.to_dict(),
        }


@dataclass(frozen=True)
class Goals:
    """What the user asks for. None means not given (the advisor then states what it assumed)."""

    qps: float | None = None
    latency_slo_ms: float | None = None
    max_staleness_s: float | None = None
    cores: int = 1
    #: price of one core-hour and of one GB-month of store, in one currency (None: the defaults).
    core_cost: float | None = None
    store_cost: float | None = None
