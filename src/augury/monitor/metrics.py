"""The server's Prometheus metrics, declared once, each with its help text, labels and buckets.

`ServeMetrics` holds every metric in its own `CollectorRegistry` (one per app, so two apps in one process,
as in the tests, never collide) and renders them in the Prometheus text format for ``GET /metrics``.
`BatchMetrics` is the dynamic batcher's observer: it has the hooks of `augury.serve.batcher.BatchObserver`
(matched by structure; this package does not import the server). Gauges whose value lives elsewhere (the
queue depth, the active store version and its age) are read when Prometheus scrapes, through callables
the app registers with `watch_queue` and `watch_store`; a callable that raises reads as NaN. So is the
model version that `augury_model_info` names (`watch_model`): in static mode it is the active store
version's, and it changes when another version is activated.

The counters and histograms the request path updates are `accumulators` families: unlocked numbers,
updated only on the event loop thread, one request at a time, and exported at scrape time (a
prometheus_client child takes a lock per update). Label values are bounded: routes are route templates
(``/v2/models/{name}/infer``), never raw paths; errors are AuguryError class names; sources are
``static``, ``dynamic`` or ``mixed``. Because they are bounded, the labelled cells the request path
touches are resolved once and kept, and the in-flight gauge is a plain integer read at scrape time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from augury.monitor.accumulators import CounterFamily, Families, HistogramFamily
from augury.monitor.sharing import SharedState

#: request latency buckets in seconds: 0.5 ms to 10 s.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: model call and queue wait buckets in seconds: 0.1 ms to 5 s.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
#: rows or requests per model call: powers of two up to 4096.
SIZE_BUCKETS = tuple(float(2**i) for i in range(13))


def _safe(read: Callable[[], float]) -> Callable[[], float]:
    def value() -> float:
        try:
            return float(read())
        except Exception:  # a scrape must never fail because a source is down
            return math.nan

    return value


class ServeMetrics:
    """Every metric the server exports, in one registry of its own. With `share_dir` (a server of several
    worker processes), the totals of every worker (`monitor.sharing`)."""

    def __init__(self, registry: CollectorRegistry | None = None, share_dir: str | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self._shared = SharedState(share_dir) if share_dir is not None else None
        self._others: list[dict[str, Any]] = []  # the other workers' states, during a scrape
        self.requests = CounterFamily(
            "augury_requests", "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"])
        self.errors = CounterFamily(
            "augury_request_errors", "Requests answered with an error (status >= 400), by route template, "
            "status code and error class.", ["route", "status", "error"])
        self.request_seconds = HistogramFamily(
            "augury_request_duration_seconds", "Time from receiving a request to sending its response, by "
            "route template.", ["route"], buckets=LATENCY_BUCKETS)
        self.in_flight = Gauge(
            "augury_requests_in_flight", "HTTP requests being handled right now.", registry=r)
        #: requests being handled; the middleware counts, `in_flight` reads it at every scrape.
        self.requests_in_flight = 0
        self.in_flight.set_function(lambda: self.requests_in_flight + self._others_gauge("in_flight"))
        self.prediction_seconds = HistogramFamily(
            "augury_prediction_duration_seconds", "Time to answer a prediction request, by where its "
            "predictions came from: static (all from the store), dynamic (all computed) or mixed.",
            ["source"], buckets=LATENCY_BUCKETS)
        self.predictions = CounterFamily(
            "augury_predictions", "Predictions served, by source (static or dynamic).", ["source"])
        self.store_lookups = CounterFamily(
            "augury_store_lookups", "Keys looked up in the prediction store, by result (hit or miss).",
            ["result"])
        self.store_errors = CounterFamily(
            "augury_store_errors", "Store lookups that failed (the store was unreachable or broken).")
        self.writeback_lookups = CounterFamily(
            "augury_writeback_lookups", "Keys looked up among the written-back dynamic predictions, by "
            "result (hit or miss).", ["result"])
        self.features_changed = CounterFamily(
            "augury_features_changed", "Examples sent with a key and features that differ from those its "
            "stored or written-back prediction was computed from: computed again (hybrid) or refused with "
            "409 (static). Not counted with --trust-keys.")
        self.writeback_rows = CounterFamily(
            "augury_writeback_rows", "Dynamic predictions written back to the prediction store, by result: "
            "written, dropped (the write-behind queue was full) or failed (the store refused the write).",
            ["result"])
        self.batch_rows = HistogramFamily(
            "augury_batch_rows", "Rows per model call made by the dynamic batcher.",
            buckets=SIZE_BUCKETS)
        self.batch_requests = HistogramFamily(
            "augury_batch_requests", "Requests coalesced into one model call by the dynamic batcher.",
            buckets=SIZE_BUCKETS)
        self.inference_seconds = HistogramFamily(
            "augury_model_inference_seconds", "Time the model took to score one batch.",
            buckets=FAST_BUCKETS)
        self.batch_failures = CounterFamily(
            "augury_batch_failures", "Model calls that failed as a whole (every request in them failed).")
        self.queue_depth = Gauge(
            "augury_queue_depth", "Requests waiting in the batcher's queue to be taken into a batch.",
            registry=r)
        self.queue_wait = HistogramFamily(
            "augury_queue_wait_seconds", "Time a request waited between arriving at the batcher and its "
            "batch being sent to the model.", buckets=FAST_BUCKETS)
        self.shed = CounterFamily(
            "augury_shed_requests", "Requests refused with 503 because the batcher's queue was full or "
            "--max-in-flight requests were being handled already.")
        self.deadline_exceeded = CounterFamily(
            "augury_deadline_exceeded", "Requests whose deadline passed before they were scored (504).")
        self.store_version = Gauge(
            "augury_store_active_version", "The number of the prediction store's active version (NaN when "
            "there is none).", registry=r)
        self.store_version_age = Gauge(
            "augury_store_version_age_seconds", "Seconds since the store's active version was published "
            "(NaN when there is none).", registry=r)
        self.monitor_samples = CounterFamily(
            "augury_monitor_samples", "Answered requests offered to the monitor's observers (drift, shadow "
            "checks), by result: queued, or dropped because the observers were behind (their queue was "
            "full). Requests not sampled are not counted.", ["result"])
        self.monitor_queue = Gauge(
            "augury_monitor_queue_depth", "Answered requests waiting for the monitor's observers.",
            registry=r)
        self.model_info = ModelInfo()
        r.register(self.model_info)
        self._families = Families([
            self.requests, self.errors, self.request_seconds, self.prediction_seconds, self.predictions,
            self.store_lookups, self.store_errors, self.writeback_lookups, self.features_changed,
            self.writeback_rows,
            self.batch_rows, self.batch_requests, self.inference_seconds, self.batch_failures,
            self.queue_wait, self.shed, self.deadline_exceeded, self.monitor_samples],
            lambda: [o.get("families", {}) for o in self._others])
        r.register(self._families)
        self._queue_depth: Callable[[], float] = lambda: 0.0
        # children resolved once: label values are bounded (see the module docstring)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._error_children: dict[tuple[str, int, str], Any] = {}
        self._predicted = {s: self.predictions.labels(s) for s in ("static", "dynamic")}
        self._predict_seconds = {s: self.prediction_seconds.labels(s)
                                 for s in ("static", "dynamic", "mixed")}
        self._store_hit = self.store_lookups.labels("hit")
        self._store_miss = self.store_lookups.labels("miss")
        self._cache_hit = self.writeback_lookups.labels("hit")
        self._cache_miss = self.writeback_lookups.labels("miss")
        self._features_changed = self.features_changed.labels()  # (exported as 0 before the first)

    def batch_observer(self) -> BatchMetrics:
        """The batcher hooks that feed these metrics."""
        return BatchMetrics(self)

    def watch_queue(self, depth: Callable[[], float]) -> None:
        """Read the queue depth from `depth` at every scrape."""
        self._queue_depth = _safe(depth)
        self.queue_depth.set_function(lambda: self._queue_depth() + self._others_gauge("queue_depth"))

    def watch_monitor(self, depth: Callable[[], float]) -> None:
        """Read the monitor's queue depth from `depth` at every scrape (this process's only)."""
        self.monitor_queue.set_function(_safe(depth))

    def watch_model(self, name: str, mode: str, version: Callable[[], str]) -> None:
        """Name the served model in `augury_model_info`, its version read from `version` at every scrape
        (empty while it cannot be read)."""
        self.model_info.watch(name, mode, version)

    def watch_store(self, version: Callable[[], float], age_s: Callable[[], float]) -> None:
        """Read the active store version's number and age (seconds) at every scrape."""
        self.store_version.set_function(_safe(version))
        self.store_version_age.set_function(_safe(age_s))

    def observe_request(self, route: str, method: str, status: int, seconds: float,
                        error: str | None) -> None:
        """Count one answered request and its latency; `error` is the error class when status >= 400."""
        children = self._request_children.get((route, method, status))
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.request_seconds.labels(route))
            self._request_children[(route, method, status)] = children
        children[0].inc()
        children[1].observe(seconds)
        if status >= 400:
            key = (route, status, error or "HTTPError")
            child = self._error_children.get(key)
            if child is None:
                child = self._error_children[key] = self.errors.labels(route, str(status), key[2])
            child.inc()

    def observe_predictions(self, static: int, dynamic: int, seconds: float) -> None:
        """Count a prediction request's answers by source and record its latency by source."""
        if static:
            self._predicted["static"].inc(static)
        if dynamic:
            self._predicted["dynamic"].inc(dynamic)
        source = "mixed" if static and dynamic else "static" if static else "dynamic"
        self._predict_seconds[source].observe(seconds)

    def observe_store(self, hits: int, misses: int) -> None:
        if hits:
            self._store_hit.inc(hits)
        if misses:
            self._store_miss.inc(misses)

    def observe_writeback(self, hits: int, misses: int) -> None:
        if hits:
            self._cache_hit.inc(hits)
        if misses:
            self._cache_miss.inc(misses)

    def observe_features_changed(self, examples: int) -> None:
        """Count examples whose features differ from those their kept prediction was computed from."""
        self._features_changed.inc(examples)

    def observe_writeback_rows(self, result: str, rows: int) -> None:
        """Count rows of dynamic predictions written back to the store: written, dropped or failed."""
        self.writeback_rows.labels(result).inc(rows)

    @property
    def sharing(self) -> bool:
        """Whether this process shares its metrics with the other workers of its server."""
        return self._shared is not None

    def share(self) -> None:
        """Leave this process's current state for the other workers (when sharing; else nothing)."""
        if self._shared is not None:
            gauges = {"in_flight": self.requests_in_flight, "queue_depth": self._queue_depth()}
            self._shared.write({"families": self._families.state(), "gauges": gauges})

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every metric (server-wide when sharing), and its content
        type."""
        with self._scrape():
            return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def collect(self) -> list[Metric]:
        """Every metric family, as `render` exports them (server-wide when sharing), as data: for the
        dashboard (`monitor.timeline`)."""
        with self._scrape():
            return list(self.registry.collect())

    @contextlib.contextmanager
    def _scrape(self) -> Iterator[None]:
        """While collecting: the other workers' states, when sharing (read by the families and gauges)."""
        if self._shared is None:
            yield
            return
        self.share()
        self._others = self._shared.others()
        try:
            yield
        finally:
            self._others = []

    def _others_gauge(self, name: str) -> float:
        """A gauge summed over the other workers that are alive (during a scrape)."""
        total = 0.0
        for other in self._others:
            value = other.get("gauges", {}).get(name)
            if other.get("alive") and isinstance(value, int | float) and not math.isnan(value):
                total += value
        return total


class ModelInfo(Collector):
    """``augury_model_info{name, version, mode} 1``, its labels read at every scrape (see `watch`); nothing
    before `watch` is called."""

    def __init__(self) -> None:
        self._watched: tuple[str, str, Callable[[], str]] | None = None

    def watch(self, name: str, mode: str, version: Callable[[], str]) -> None:
        self._watched = (name, mode, version)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("augury_model_info", "The model being served (value 1), by name, "
                                   "version and mode.", labels=["name", "version", "mode"])
        if self._watched is not None:
            name, mode, read = self._watched
            try:
                version = str(read())
            except Exception:  # a scrape must never fail because a source is down
                version = ""
            family.add_metric([name, version, mode], 1.0)
        yield family


class BatchMetrics:
    """The dynamic batcher's observer (`augury.serve.batcher.BatchObserver`), feeding `ServeMetrics`."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self._m = metrics

    def batch_scored(self, rows: int, requests: int, inference_s: float) -> None:
        self._m.batch_rows.observe(rows)
        self._m.batch_requests.observe(requests)
        self._m.inference_seconds.observe(inference_s)

    def batch_failed(self, requests: int, error: BaseException) -> None:
        self._m.batch_failures.inc()

    def queue_wait(self, seconds: float) -> None:
        self._m.queue_wait.observe(seconds)

    def shed(self) -> None:
        self._m.shed.inc()

    def deadline_missed(self) -> None:
        self._m.deadline_exceeded.inc()
