"""The alert webhook (``augury serve --alert-webhook URL``): each alert change POSTed as JSON.

`Webhook.send` is called on the monitor's thread (`monitor.alerts.AlertBook`) and only queues the alert
(at most `CAPACITY`; past that one is dropped and logged): a thread of the webhook's own POSTs them, in
order, one at a time, as ``application/json`` (`Alert.to_dict`). A delivery that fails (no connection,
a timeout, a status other than 2xx) is retried `ATTEMPTS` times in all, waiting `BACKOFF_S`, then twice
that, and so on; then it is given up and logged. So a receiver that is down or slow delays later alerts,
never a request, and never the monitor. Plain `urllib.request`: no dependency for one POST at a time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request

import orjson

from augury.errors import ConfigError
from augury.monitor.alerts import Alert

log = logging.getLogger(__name__)

#: alerts waiting to be delivered, at most (past it an alert is dropped, and logged).
CAPACITY = 100
#: deliveries of one alert tried, at most.
ATTEMPTS = 5
#: seconds before the first retry (doubled each time).
BACKOFF_S = 0.5
#: seconds one POST may take.
TIMEOUT_S = 5.0


class Webhook:
    """POST each alert to `url` (see the module docstring)."""

    def __init__(self, url: str, *, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
                 timeout_s: float = TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"--alert-webhook must be an http:// or https:// URL, not {url!r}")
        self.url = url
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.delivered = 0
        self.failed = 0
        self._queue: queue.Queue[Alert | None] = queue.Queue(CAPACITY)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="augury-webhook", daemon=True)
        self._thread.start()

    def send(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            log.warning("alert webhook %s is %d alerts behind; dropped: %s", self.url, CAPACITY,
                        alert.message)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (within `timeout_s`), then stop."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)
        self._stop.set()  # (a delivery still waiting to retry gives up)

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                return
            self._deliver(alert)

    def _deliver(self, alert: Alert) -> None:
        body = orjson.dumps(alert.to_dict())
        wait = self.backoff_s
        why = ""
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                self.delivered += 1
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
                why = str(exc)
            if attempt < self.attempts:
                if self._stop.wait(wait):
                    break
                wait *= 2
        self.failed += 1
        log.warning("alert webhook %s: gave up after %d attempts (%s): %s", self.url, self.attempts, why,
                    alert.message)
