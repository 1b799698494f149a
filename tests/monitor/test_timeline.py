"""The dashboard's numbers (`monitor.timeline`): percentiles from histogram buckets as Prometheus's
``histogram_quantile`` gives them, and rates, ratios and percentiles per interval from real metric
families (a `ServeMetrics` updated as the server updates it)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from augury.monitor import ServeMetrics
from augury.monitor.metrics import LATENCY_BUCKETS
from augury.monitor.timeline import Reading, Timeline, point, quantile


def test_quantile_interpolates_within_a_bucket_as_prometheus_does() -> None:
    buckets = [(1.0, 10.0), (2.0, 30.0), (4.0, 40.0), (math.inf, 40.0)]
    assert quantile(0.25, buckets) == pytest.approx(1.0)  # rank 10: the top of the first bucket
    assert quantile(0.5, buckets) == pytest.approx(1.5)  # rank 20: halfway through (1, 2]
    assert quantile(0.9, buckets) == pytest.approx(3.2)  # rank 36: 6/10 of (2, 4]
    assert quantile(0.99, [(1.0, 1.0), (math.inf, 100.0)]) == 1.0  # in +Inf: the last finite bound
    assert quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    assert quantile(0.5, []) is None


def test_quantile_is_within_a_bucket_of_the_true_percentile() -> None:
    values = np.random.default_rng(0).lognormal(mean=-5, sigma=1, size=5000)
    counts = [float(np.sum(values <= le)) for le in LATENCY_BUCKETS] + [float(len(values))]
    buckets = list(zip([*LATENCY_BUCKETS, math.inf], counts, strict=True))
    for q in (0.5, 0.9, 0.99):
        true = float(np.quantile(values, q))
        i = next(i for i, le in enumerate(LATENCY_BUCKETS) if le >= true)
        low = LATENCY_BUCKETS[i - 1] if i else 0.0
        assert low <= (quantile(q, buckets) or -1) <= LATENCY_BUCKETS[i]


def test_a_point_is_the_interval_between_two_readings() -> None:
    metrics = ServeMetrics()
    before = Reading.of(metrics.collect(), t=100.0)
    for _ in range(30):
        metrics.observe_request("/v1/models/{name}:predict", "POST", 200, 0.002, None)
        metrics.observe_predictions(static=1, dynamic=0, seconds=0.002)
    for _ in range(10):
        metrics.observe_request("/v1/models/{name}:predict", "POST", 200, 0.02, None)
        metrics.observe_predictions(static=0, dynamic=4, seconds=0.02)
    metrics.observe_request("/v1/models/{name}:predict", "POST", 422, 0.001, "InputError")
    metrics.observe_store(hits=30, misses=40)
    observer = metrics.batch_observer()
    observer.batch_scored(rows=40, requests=10, inference_s=0.01)
    now = Reading.of(metrics.collect(), t=110.0)
    p = point(now, before)
    assert p["seconds"] == 10.0
    assert p["requests_per_s"] == pytest.approx(4.1) and p["errors_per_s"] == pytest.approx(0.1)
    assert p["predictions_per_s"] == {"static": pytest.approx(3.0), "dynamic": pytest.approx(4.0)}
    assert p["static_hit_ratio"] == pytest.approx(30 / 70)
    assert p["batch_rows"] == 40.0 and p["batch_requests"] == 10.0
    assert 1.0 < (p["latency_ms"]["static"]["p50"] or 0) <= 2.5  # in the (1, 2.5] ms bucket
    assert 10.0 < (p["latency_ms"]["dynamic"]["p99"] or 0) <= 25.0
    assert p["latency_ms"]["mixed"] == {"p50": None, "p90": None, "p99": None}
    assert p["queue_depth"] == 0.0 and p["store_age_s"] is None  # (no store watched: NaN, said as None)


def test_the_timeline_adds_a_point_at_most_every_min_step() -> None:
    metrics = ServeMetrics()
    timeline = Timeline(started=0.0, min_step_s=1.0)
    metrics.observe_request("/metrics", "GET", 200, 0.001, None)
    first = timeline.update(metrics.collect(), t=10.0)
    assert [p["requests_per_s"] for p in first["points"]] == [pytest.approx(0.1)]  # since the start
    assert timeline.update(metrics.collect(), t=10.5)["points"] == first["points"]  # too soon: no point
    metrics.observe_request("/metrics", "GET", 200, 0.001, None)
    later = timeline.update(metrics.collect(), t=12.0)
    assert [p["requests_per_s"] for p in later["points"]] == [pytest.approx(0.1), pytest.approx(0.5)]
    assert later["totals"]["requests"] == 2 and later["drift"] == [] and later["alerts"] == []


def test_the_first_reading_is_a_point_however_soon() -> None:
    """A page opened just after the server started (tests/serve/test_dashboard.py: chromium's refreshes
    in virtual time come milliseconds apart) sees the traffic since the start at once."""
    metrics = ServeMetrics()
    timeline = Timeline(started=0.0, min_step_s=1.0)
    metrics.observe_request("/metrics", "GET", 200, 0.001, None)
    first = timeline.update(metrics.collect(), t=0.25)
    assert [p["requests_per_s"] for p in first["points"]] == [pytest.approx(4.0)]
    assert timeline.update(metrics.collect(), t=0.5)["points"] == first["points"]  # then one a second
