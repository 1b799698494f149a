"""Staleness: how old the store's active version is, against the limit the user gave (``--max-staleness``).

Static predictions do not go wrong loudly: they go stale. `StalenessWatch` is an observer of the tap
(`monitor.tap`), so it runs on the monitor's thread, called every drain whether or not requests came; at
most every `CHECK_EVERY_S` it reads the active version (`PredictionStore.active`) and updates the
``staleness`` alert (`monitor.alerts`): firing while the version was published longer ago than the limit
(or while there is no active version at all), resolved once a newer one is active. The age itself is the
gauge ``augury_store_version_age_seconds`` (`ServeMetrics.watch_store`); this exports the limit beside it,
``augury_store_max_staleness_seconds``, so a dashboard or a Prometheus rule can compare the two. A store
that cannot be read changes nothing (readiness says so: `serve.service`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from augury.errors import StoreError
from augury.monitor.alerts import AlertBook
from augury.monitor.tap import Observation
from augury.store import PredictionStore

#: seconds between two reads of the active version.
CHECK_EVERY_S = 1.0


class StalenessWatch(Collector):
    """The ``staleness`` alert of `store`'s active version against `max_age_s` seconds."""

    def __init__(self, store: PredictionStore, max_age_s: float, alerts: AlertBook) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self.alerts = alerts
        self._checked = -float("inf")

    def observe(self, observations: Sequence[Observation]) -> None:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            self.check()

    def check(self) -> None:
        """Read the active version now and update the alert."""
        try:
            active = self.store.active()
        except StoreError:
            return
        limit = self.max_age_s
        if active is None:
            self.alerts.update("staleness", {}, True, float("inf"), limit,
                               "the prediction store has no active version")
            return
        age = time.time() - active.created_at
        stale = age > limit
        message = (f"store version {active.version} was published {_span(age)} ago, longer than "
                   f"--max-staleness {_span(limit)}: its predictions are stale; run the batch job and publish"
                   if stale else f"store version {active.version} is {_span(age)} old, within {_span(limit)}")
        self.alerts.update("staleness", {}, stale, age, limit, message)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("augury_store_max_staleness_seconds", "The age past which the store's "
                                "active version is stale (--max-staleness).", value=self.max_age_s)


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"
