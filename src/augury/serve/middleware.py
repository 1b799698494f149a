"""One ASGI middleware for what every request needs: a request id, metrics, a log line, a last resort.

- ``X-Request-Id``: echoed when the client sends a sane one (printable ASCII, at most 128 characters),
  otherwise generated (32 hex digits: `RequestIds`); set on every response and in every log line.
- Metrics: each request is counted by route template, method and status, and timed
  (`monitor.ServeMetrics.observe_request`); errors also by error class.
- Logs (logger ``augury.serve.access``): one JSON line per request at DEBUG; error responses always
  (WARNING for 4xx, 503 and 504; ERROR with the traceback for other 5xx). An error's whole message is
  logged, a store failure's cause included (its response names only the request id: `serve.errors`); the
  path is cut to `errors.PATH_CHARS` and the message to `errors.MESSAGE_CHARS`, so a line stays small
  whatever a client sends.
- An exception that escapes a route (a bug) becomes a 500 ``{"error": ...}`` naming the request id,
  and the server carries on.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which costs a task and a stream per request.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from augury.monitor import ServeMetrics
from augury.serve.errors import INTERNAL_ERROR, MESSAGE_CHARS, PATH_CHARS, clipped

log = logging.getLogger("augury.serve.access")

REQUEST_ID = "x-request-id"
_MAX_ID = 128


class RequestIds:
    """Generated request ids: 16 random hex digits drawn once (per app, so per worker process), then a
    16-digit counter: 32 hex digits, unique across workers and restarts, without a uuid4 per request."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def of(self, scope: Scope) -> str:
        """The client's ``X-Request-Id`` if it is sane, else a new one."""
        return self.of_headers(scope.get("headers", ()))

    def of_headers(self, headers: Any) -> str:
        """`of` for a request's raw header list (names lower-cased), before any scope exists."""
        for name, value in headers:
            if name == b"x-request-id":
                if 0 < len(value) <= _MAX_ID and all(33 <= c <= 126 for c in value):
                    return str(value.decode("ascii"))
                break
        return f"{self._prefix}{next(self._counter):016x}"


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class Bookkeeping:
    """What every request needs, whichever way it is dispatched: its id, its metrics and its log line."""

    def __init__(self, metrics: ServeMetrics) -> None:
        self.metrics = metrics
        self.ids = RequestIds()

    def finish(self, scope: Scope, rid: str, route: str, status: int, seconds: float,
               error: str | None, message: str | None) -> None:
        """Count and time one answered request, and log it (errors always, the rest at DEBUG)."""
        self.metrics.observe_request(route, scope["method"], status, seconds, error)
        if status < 400:
            if not log.isEnabledFor(logging.DEBUG):
                return
            level = logging.DEBUG
        elif status >= 500 and status not in (503, 504):
            level = logging.ERROR
        else:
            level = logging.WARNING
        line: dict[str, Any] = {"request_id": rid, "method": scope["method"],
                                "path": clipped(scope["path"], PATH_CHARS), "route": route,
                                "status": status, "ms": round(seconds * 1e3, 3)}
        if message is not None:
            line["error"] = clipped(message, MESSAGE_CHARS)
        client = scope.get("client")
        if client:
            line["client"] = f"{client[0]}:{client[1]}"
        log.log(level, "%s", orjson.dumps(line).decode())


def internal_error(scope: Scope, rid: str, exc: Exception) -> str:
    """Log an exception that escaped a route (a bug) with its traceback; the message for the client."""
    log.exception("request %s %s failed (request id %s)", scope["method"],
                  clipped(scope["path"], PATH_CHARS), rid, exc_info=exc)
    return f"{INTERNAL_ERROR} (request id {rid})"  # (the exception's class is the log line's "error")


class Observability:
    """Request ids, request metrics, access and error logs, and the last-resort 500 (a middleware for
    the routes `hot.HotDispatch` does not answer itself)."""

    def __init__(self, app: ASGIApp, books: Bookkeeping) -> None:
        self.app = app
        self.books = books

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = self.books.ids.of(scope)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 0
        raw_id = rid.encode("ascii")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", raw_id)]
            await send(message)

        metrics = self.books.metrics
        metrics.requests_in_flight += 1
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            state["error"] = type(exc).__name__
            state["error_message"] = internal_error(scope, rid, exc)
            if status == 0:
                body = orjson.dumps({"error": state["error_message"]})
                await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            metrics.requests_in_flight -= 1
            self.books.finish(scope, rid, _route(scope), status or 500, time.perf_counter() - started,
                              state.get("error"), state.get("error_message"))
