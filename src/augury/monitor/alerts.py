"""Alert states: what is firing now, and a log line (and a word to each sink) whenever that changes.

An alert is a name (``drift``, ``staleness``, ``shadow``) and labels (say ``kind=input, source=dynamic,
column=f0``). The monitor updates each one it evaluates (`AlertBook.update`, on the monitor's thread);
nothing is said while a state holds, and a change is said once: a log line on the ``augury.monitor.alerts``
logger (WARNING when it fires, INFO when it resolves) whose message is one JSON object, as the access log
lines are, and the same alert handed to every `AlertSink` (the webhook: `monitor.webhook`). The states are
exported as the gauge ``augury_alert_firing{alert, ...}`` (1 firing, 0 not), which the Prometheus rules
shipped with augury watch (``deploy/prometheus/augury-alerts.yml``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import msgspec
import orjson
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("augury.monitor.alerts")

#: every label an alert may carry (the gauge's label set; an alert leaves the others empty).
LABELS = ("kind", "source", "column")


class Alert(msgspec.Struct, frozen=True):
    """One change of an alert's state: `firing` or resolved, the value measured against its limit, a
    sentence for people, and when (``time.time()``)."""

    name: str
    labels: Mapping[str, str]
    firing: bool
    value: float
    limit: float
    message: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"alert": self.name, "state": "firing" if self.firing else "resolved", **self.labels,
                "value": self.value, "limit": self.limit, "message": self.message, "at": self.at}


class AlertSink(Protocol):
    """Where alert changes go besides the log. `send` is called on the monitor's thread: it must hand
    the alert on and return (the webhook queues it for a thread of its own)."""

    def send(self, alert: Alert) -> None: ...


class AlertBook(Collector):
    """Every alert's current state (a Prometheus collector of ``augury_alert_firing``)."""

    def __init__(self, sinks: Sequence[AlertSink] = ()) -> None:
        self.sinks = list(sinks)
        self._firing: dict[tuple[str, tuple[tuple[str, str], ...]], bool] = {}
        self._lock = threading.Lock()  # the monitor's thread updates, a scrape reads

    def update(self, name: str, labels: Mapping[str, str], firing: bool, value: float, limit: float,
               message: str) -> Alert | None:
        """Record the state of one alert; returns the `Alert` said if it changed (None if it did not; an
        alert seen for the first time and not firing is recorded silently)."""
        key = (name, tuple(sorted(labels.items())))
        with self._lock:
            before = self._firing.get(key)
            self._firing[key] = firing
        if (before is None and not firing) or before == firing:
            return None
        alert = Alert(name, dict(labels), firing, value, limit, message, time.time())
        log.log(logging.WARNING if firing else logging.INFO, "%s", orjson.dumps(alert.to_dict()).decode())
        for sink in self.sinks:
            try:
                sink.send(alert)
            except Exception:  # a sink's bug must not stop the monitor
                log.exception("alert sink %s failed", type(sink).__name__)
        return alert

    def firing(self) -> list[tuple[str, dict[str, str]]]:
        """The alerts firing now: name and labels."""
        with self._lock:
            return [(name, dict(labels)) for (name, labels), on in self._firing.items() if on]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("augury_alert_firing", "Whether an alert of the monitor is firing (1) or "
                                   "not (0), by alert (drift, staleness, shadow) and what it is about.",
                                   labels=["alert", *LABELS])
        with self._lock:
            states = list(self._firing.items())
        for (name, labels), on in states:
            found = dict(labels)
            family.add_metric([name, *(found.get(k, "") for k in LABELS)], 1.0 if on else 0.0)
        yield family
