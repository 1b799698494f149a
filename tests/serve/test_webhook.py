"""The alert webhook against a real HTTP receiver on 127.0.0.1: delivered as JSON, retried after a failure,
given up (and counted) when nobody answers, never holding up whoever raised the alert."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from augury.errors import ConfigError
from augury.monitor.alerts import AlertBook
from augury.monitor.webhook import Webhook


class Receiver:
    """An HTTP server that answers its first `failures` POSTs with 500, then 204, keeping every body."""

    def __init__(self, failures: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.headers["Content-Type"] == "application/json"
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2)
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _until(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_an_alert_is_posted_as_json_and_retried_after_failures(receiver: Receiver) -> None:
    hook = Webhook(receiver.url, backoff_s=0.05)
    book = AlertBook([hook])
    book.update("drift", {"kind": "input", "source": "dynamic", "column": "f0"}, True, 0.8, 0.2, "f0 drifted")
    book.update("drift", {"kind": "input", "source": "dynamic", "column": "f0"}, True, 0.9, 0.2, "again")
    book.update("drift", {"kind": "input", "source": "dynamic", "column": "f0"}, False, 0.05, 0.2, "back")
    _until(lambda: len(receiver.bodies) == 2)
    hook.close()
    fired, resolved = receiver.bodies
    assert fired["alert"] == "drift" and fired["state"] == "firing" and fired["column"] == "f0"
    assert fired["value"] == 0.8 and fired["limit"] == 0.2 and fired["message"] == "f0 drifted"
    assert resolved["state"] == "resolved"  # (the unchanged state in between said nothing)
    assert hook.delivered == 2 and hook.failed == 0


def test_a_receiver_that_is_down_is_given_up_without_holding_the_caller() -> None:
    down = Receiver()
    url = down.url  # a port that was bound, then closed: nobody listens there
    down.server.server_close()
    hook = Webhook(url, attempts=3, backoff_s=0.05)
    AlertBook([hook]).update("staleness", {}, True, 100.0, 10.0, "stale")
    assert hook.failed == 0  # (update returned while the webhook was still trying)
    _until(lambda: hook.failed == 1)
    hook.close()
    assert hook.delivered == 0


def test_a_webhook_must_be_an_http_url() -> None:
    with pytest.raises(ConfigError, match="http:// or https://"):
        Webhook("ftp://example.com/x")
