"""What the live dashboard draws, computed from the server's own metric families (those ``/metrics``
exports): rates, latency percentiles and ratios per interval between two snapshots, and the current
state of the gauges (queues, drift, staleness, shadow check, alerts).

Counters only grow, so a rate needs two readings. `Timeline` keeps the last `POINTS` points, each
computed from the reading it was taken at and the one before. A reading is taken when the dashboard asks
for data (``GET /dashboard/data``), at most one every `MIN_STEP_S` seconds, so nothing runs while nobody
looks; the first reading is compared with the counters' zeros at the server's start, so the first point
after the page is opened averages everything since then. Percentiles are estimated from the histogram
buckets of the interval as Prometheus's ``histogram_quantile`` does (linear within a bucket).

Pure data: no HTTP here (`augury.serve.dashboard` serves it). Thread-safe: `update` may be called from
several threads at once (each request renders on a thread of its own).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

#: points kept: at the page's refresh of 2 s, the last 10 minutes.
POINTS = 300
#: the shortest interval a point covers, in seconds: refreshes closer than this share a point.
MIN_STEP_S = 1.0
#: the latency percentiles drawn, by source.
QUANTILES = (0.5, 0.9, 0.99)
SOURCES = ("static", "dynamic", "mixed")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Reading:
    """Every sample of one collection, by sample name, then by its labels (sorted pairs)."""

    t: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, families: Iterable[Metric], t: float) -> Reading:
        reading = cls(t)
        for family in families:
            for s in family.samples:
                reading.samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
        return reading

    def total(self, name: str, **match: str) -> float:
        """The sum of `name`'s samples whose labels include `match`."""
        return sum(v for labels, v in self.samples.get(name, {}).items()
                   if all((k, want) in labels for k, want in match.items()) and not math.isnan(v))

    def value(self, name: str) -> float | None:
        """The unlabelled sample `name` (None when absent or NaN)."""
        return _num(self.samples.get(name, {}).get((), math.nan))

    def buckets(self, name: str, **match: str) -> list[tuple[float, float]]:
        """(upper bound, cumulative count) of histogram `name`'s series matching `match`, summed."""
        found: dict[float, float] = {}
        for labels, v in self.samples.get(f"{name}_bucket", {}).items():
            named = dict(labels)
            if all(named.get(k) == want for k, want in match.items()):
                le = float(named["le"])
                found[le] = found.get(le, 0.0) + v
        return sorted(found.items())

    def labelled(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(dict(labels), v) for labels, v in sorted(self.samples.get(name, {}).items())]

    def model(self) -> dict[str, str]:
        """The served model's name, version and mode (``augury_model_info``), or {}."""
        return next((d for d, _ in self.labelled("augury_model_info")), {})

    def store_value(self, name: str) -> float | None:
        """Gauge `name` of the store (None without one: the gauge then reads 0, never set)."""
        return self.value(name) if self.model().get("mode") in ("static", "hybrid") else None


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The `q` quantile of cumulative `buckets` (Prometheus's ``histogram_quantile``); None if empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):  # past the last finite bound: that bound is all that can be said
                return lower
            return lower + (le - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = le, count
    return lower


def _num(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) or math.isinf(v) else v


def _ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def _delta_buckets(now: Reading, before: Reading, name: str, **match: str) -> list[tuple[float, float]]:
    old = dict(before.buckets(name, **match))
    return [(le, count - old.get(le, 0.0)) for le, count in now.buckets(name, **match)]


def point(now: Reading, before: Reading) -> dict[str, Any]:
    """The rates, percentiles and ratios of the interval from `before` to `now`, and `now`'s gauges."""
    dt = max(now.t - before.t, 1e-9)

    def rate(name: str, **match: str) -> float:
        return max(now.total(name, **match) - before.total(name, **match), 0.0) / dt

    def delta(name: str, **match: str) -> float:
        return now.total(name, **match) - before.total(name, **match)

    latency: dict[str, dict[str, float | None]] = {}
    for source in SOURCES:
        interval = _delta_buckets(now, before, "augury_prediction_duration_seconds", source=source)
        ms = [quantile(q, interval) for q in QUANTILES]
        latency[source] = {f"p{round(q * 100)}": None if v is None else v * 1000 for q, v in zip(
            QUANTILES, ms, strict=True)}
    hits, misses = delta("augury_store_lookups_total", result="hit"), delta("augury_store_lookups_total",
                                                                           result="miss")
    return {
        "t": now.t,
        "seconds": dt,
        "requests_per_s": rate("augury_requests_total"),
        "errors_per_s": rate("augury_request_errors_total"),
        "predictions_per_s": {s: rate("augury_predictions_total", source=s) for s in ("static", "dynamic")},
        "latency_ms": latency,
        "static_hit_ratio": _ratio(hits, hits + misses),
        "batch_rows": _ratio(delta("augury_batch_rows_sum"), delta("augury_batch_rows_count")),
        "batch_requests": _ratio(delta("augury_batch_requests_sum"), delta("augury_batch_requests_count")),
        "queue_depth": now.value("augury_queue_depth"),
        "monitor_queue_depth": now.value("augury_monitor_queue_depth"),
        "in_flight": now.value("augury_requests_in_flight"),
        "monitor_dropped_per_s": rate("augury_monitor_samples_total", result="dropped"),
        "store_age_s": now.store_value("augury_store_version_age_seconds"),
        "shadow_disagreement": now.value("augury_shadow_disagreement"),
    }


def state(now: Reading) -> dict[str, Any]:
    """What is true at `now`: totals, the model, drift per column, staleness, shadow check, alerts."""
    firing = {(d.get("alert"), d.get("kind"), d.get("source"), d.get("column")): v
              for d, v in now.labelled("augury_alert_firing")}
    drift = [{"kind": d.get("kind"), "source": d.get("source"), "column": d.get("column"), "psi": _num(v),
              "firing": firing.get(("drift", d.get("kind"), d.get("source"), d.get("column")), 0.0) == 1.0}
             for d, v in now.labelled("augury_drift_psi")]
    return {
        "model": now.model(),
        "totals": {
            "requests": now.total("augury_requests_total"),
            "errors": now.total("augury_request_errors_total"),
            "predictions": {s: now.total("augury_predictions_total", source=s)
                            for s in ("static", "dynamic")},
            "store_hits": now.total("augury_store_lookups_total", result="hit"),
            "store_misses": now.total("augury_store_lookups_total", result="miss"),
            "batches": now.total("augury_batch_rows_count"),
            "monitor_queued": now.total("augury_monitor_samples_total", result="queued"),
            "monitor_dropped": now.total("augury_monitor_samples_total", result="dropped"),
        },
        "drift": drift,
        "drift_windows": {d.get("source", ""): v for d, v in now.labelled("augury_drift_windows_total")},
        "staleness": {"version": now.store_value("augury_store_active_version"),
                      "age_s": now.store_value("augury_store_version_age_seconds"),
                      "limit_s": now.value("augury_store_max_staleness_seconds")},
        "shadow": {"disagreement": now.value("augury_shadow_disagreement"),
                   "shift": now.value("augury_shadow_shift"),
                   "checked": now.samples.get("augury_shadow_checked_total", {}).get(())},
        "alerts": [{k: d.get(k, "") for k in ("alert", "kind", "source", "column")}
                   for d, v in now.labelled("augury_alert_firing") if v == 1.0],
    }


class Timeline:
    """The dashboard's points (see the module docstring), from readings of one server's metrics."""

    def __init__(self, started: float | None = None, points: int = POINTS,
                 min_step_s: float = MIN_STEP_S) -> None:
        self._last = Reading(time.time() if started is None else started)  # every counter at zero
        self._points: deque[dict[str, Any]] = deque(maxlen=points)
        self._min_step_s = min_step_s
        self._lock = threading.Lock()

    def update(self, families: Iterable[Metric], t: float | None = None) -> dict[str, Any]:
        """Take a reading of `families` (a point, unless the last is under `min_step_s` old; the first
        reading always is one, so a page opened just after the server started shows its traffic at once)
        and return the dashboard's data: the points, oldest first, and the state of the reading."""
        now = Reading.of(families, time.time() if t is None else t)
        with self._lock:
            if not self._points or now.t - self._last.t >= self._min_step_s:
                self._points.append(point(now, self._last))
                self._last = now
            points = list(self._points)
        return {"now": now.t, "points": points, **state(now)}

