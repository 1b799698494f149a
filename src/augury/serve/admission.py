"""Admission: the server's limit on requests handled at once, kept where refusing costs (almost) nothing.

A request over the limit must cost the server as little as possible, or refusing becomes the overload:
measured on 2 cores with a 100-tree HistGradientBoosting model (capacity ~16,700 requests/s under wrk at
32 connections), an open-loop load at twice that collapsed to a few hundred answers a second when each
refusal went through the app like any request (an ASGI cycle, a task, a JSON body, a warning line in the
log) and the batcher waited for loop turns that the refusals made long.

So the limit is checked by augury's HTTP protocol (`serve.protocol`) when a request's head has been
parsed, before any ASGI scope, task or body exists for it: the protocol asks `Admission.admit`, and a
refused request gets `refusal`'s bytes, written with the turn's other answers, a 503 with
``Retry-After: 1`` and ``{"error": ...}``, that keeps the connection (its small body is read and dropped
by the parser). The count it keeps is of requests handed to the app and not yet answered, so it is
exact however many arrive in one loop turn. Probes and the metrics scrape (`NEVER_SHED`) are never
refused. Refusals are counted in the same metrics the app's own shedding uses (one cell increment each),
and logged as one line every `LOG_EVERY_S` seconds at most instead of one line each. While refusals go
on, the limit itself is lowered to `OVERLOAD_LIMIT` for a while (`Admission._adapt`), then raised back in
steps once nothing is refused (`Admission._step_up`).

The protocol finds the gate in the ASGI lifespan state (`GATE_KEY`), the channel the ASGI spec gives an
app to hand objects to its server; an ASGI server other than augury's protocol never looks, and the app
sheds those requests itself (`app.AuguryApp`), with the same answer, the same metrics and a log line each.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from augury.monitor import ServeMetrics
from augury.serve.middleware import RequestIds
from augury.serve.wire import dump_json

log = logging.getLogger("augury.serve.access")

#: the lifespan state key under which the app leaves its `Admission` for the protocol.
GATE_KEY = "augury.admission"
#: the ASGI extension (in ``scope["extensions"]``) of a request the protocol's admission limit let
#: through (or exempted): the app does not count it against the limit again.
ADMITTED = "augury.admitted"
#: paths answered whatever the load (liveness and readiness probes, the metrics scrape, the dashboard:
#: an overloaded server is when its operator looks, and a page refreshes every 2 s at most).
NEVER_SHED = ("/v2/health/", "/metrics", "/dashboard")
_NEVER_SHED_RAW = tuple(p.encode("ascii") for p in NEVER_SHED)
#: the error class refusals are counted under (``augury_request_errors_total{error=...}``).
ERROR = "TooManyInFlight"
#: at most one log line about refusals per this many seconds.
LOG_EVERY_S = 10.0
#: the limit while overload lasts (`Admission`): an accepted request then waits about this many
#: requests' worth of the server's time instead of the full limit's.
OVERLOAD_LIMIT = 128


def refusal_message(max_in_flight: int, ceiling: int | None = None) -> str:
    """The error a request over the limit gets (the same from the protocol and from the app); `ceiling`:
    the --max-in-flight the limit was lowered from while overload lasts (`Admission._adapt`)."""
    if ceiling is not None and ceiling != max_in_flight:
        return (f"the server is handling {max_in_flight} requests already (--max-in-flight {ceiling}, "
                f"lowered while overload lasts); retry later")
    return f"the server is handling {max_in_flight} requests already (--max-in-flight); retry later"


class Admission:
    """At most `limit` requests handed to the app at once (health probes and metrics apart).

    The protocol calls `admit` once per request, on the event loop's thread; an admitted request must be
    given back with `done` exactly once, when its response is complete or its client gone."""

    def __init__(self, limit: int, metrics: ServeMetrics, ids: RequestIds, *,
                 overload_limit: int = OVERLOAD_LIMIT, sustained_s: float = 0.5, gap_s: float = 0.25,
                 hold_s: float = 30.0, step_s: float = 1.0) -> None:
        self.limit = self.ceiling = limit  # `limit` is lowered to `overload_limit` while overload lasts
        self.overload_limit = min(limit, overload_limit)
        self._sustained_s, self._gap_s, self._hold_s, self._step_s = sustained_s, gap_s, hold_s, step_s
        self._refusing_since = self._refused_at = -math.inf
        self._timer: asyncio.TimerHandle | None = None  # the next step back up (`_step_up`), if any
        self.admitted = 0  # requests handed to the app, not yet answered
        self.refused = 0  # requests refused since the start
        self._ids = ids
        self._metrics = metrics
        #: the refusal's headers and body by the limit in force (each of `steps`)
        self._answers = {n: _refusal_parts(refusal_message(n, limit)) for n in self.steps()}
        self._pending: dict[bytes, int] = {}  # refusals by method, not yet in the metrics
        self._logged_at = 0.0
        self._logged_count = 0

    def steps(self) -> list[int]:
        """The limits in force in turn after overload: `overload_limit`, doubled until `ceiling`."""
        steps = [self.overload_limit]
        while steps[-1] < self.ceiling:
            steps.append(min(steps[-1] * 2, self.ceiling))
        return steps

    def exempt(self, path: bytes) -> bool:
        """Whether `path` (the request target's path) is answered whatever the load."""
        return path.startswith(_NEVER_SHED_RAW)

    def admit(self) -> bool:
        """Take a place for a request if one is free (the caller checked `exempt` first)."""
        if self.admitted < self.limit:
            self.admitted += 1
            return True
        return False

    def done(self) -> None:
        """Give back the place of an admitted request."""
        self.admitted -= 1

    def refusal(self, method: bytes, headers: list[tuple[bytes, bytes]], close: bool) -> bytes:
        """Count a refused request; its response after the status line and the server's default headers:
        the 503's own headers (its request id: the client's, else a new one) and its JSON body. Called on
        the event loop's thread; the turn's refusals reach the metrics together at its end (`_count`)."""
        self.refused += 1
        pending = self._pending
        if not pending:
            asyncio.get_running_loop().call_soon(self._count)
        pending[method] = pending.get(method, 0) + 1
        rid = self._ids.of_headers(headers).encode("ascii")
        head, body = self._answers[self.limit]
        return b"".join([head, b"x-request-id: ", rid, b"\r\nconnection: close\r\n" if close else b"\r\n",
                         body])

    def _count(self) -> None:
        """Put the turn's refusals in the metrics (as the app counts its own: `observe_request` and the
        shed counter), and log a line about them every `LOG_EVERY_S` seconds at most."""
        pending, self._pending = self._pending, {}
        metrics = self._metrics
        total = 0
        for method, n in pending.items():
            total += n
            for _ in range(n):
                metrics.observe_request("unmatched", method.decode("ascii", "replace"), 503, 0.0, ERROR)
        metrics.shed.inc(total)
        self._adapt(total)
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            log.warning("refused %d requests with 503 (--max-in-flight %d reached) since the last such line",
                        self.refused - self._logged_count, self.ceiling)
            self._logged_at, self._logged_count = now, self.refused

    def _adapt(self, refused: int) -> None:
        """Lower the limit to `overload_limit` for `hold_s` once refusals have gone on for `sustained_s`
        (loop turns with refusals no more than `gap_s` apart), or at once when one loop turn refused
        more requests than the full limit (`refused` of them: such turns can be longer than `gap_s`, so
        no run of turns would ever be seen; measured at 3x capacity, where the limit then never fell);
        then it is raised back in steps (`_step_up`). Called once per loop turn that refused (`_count`),
        so it costs nothing under the limit.

        Why: the full limit absorbs bursts (a server stalled for a moment answers them late rather than
        refusing), but under lasting overload the server holds that many requests all the time, and an
        accepted request waits about limit / throughput (Little's law); its clients, answered slowly,
        open more connections, which make every loop turn longer still. Measured on 2 cores at 3x
        capacity: 512 in flight served 18-28 % of the capacity with 200s at a p99 of ~5 s, 128 in
        flight 33-44 % at 58-65 ms (BENCHMARKS.md, overload). A hold of 30 s rather than 5 s: each return
        to the full limit let the queue and the connections grow again for `sustained_s` (two pairs at
        3x, when the full limit came back at once: p99 64 and 733 ms against 453 and 2,763 ms, no
        timeouts against ~300 a second)."""
        now = time.monotonic()
        if now - self._refused_at > self._gap_s:
            self._refusing_since = now
        self._refused_at = now
        lasting = now - self._refusing_since >= self._sustained_s or refused > self.ceiling
        if self.limit > self.overload_limit and lasting:
            raised = self.limit
            self.limit = self.overload_limit
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(self._hold_s, self._step_up)
            log.warning("overloaded for %.1f s: admitting %d requests at once for the next %g s at least "
                        "(not %d)", now - self._refusing_since, self.limit, self._hold_s, raised)

    def _step_up(self) -> None:
        """Raise the limit one step (doubled, at most `ceiling`) if no request was refused for `step_s`,
        else look again `step_s` later; on until the full limit is back.

        Why steps rather than the full limit at once: a load still over the capacity fills whatever it is
        given, so the full limit back at once let 512 requests in, queued behind each other, until the
        overload had lasted `sustained_s` again (a p99 of seconds for those requests, twice a minute at
        3x); a step is taken only once the lower limit has refused nothing, that is once the load fits in
        it, and while the overload lasts the limit stays low. Refusals that last `sustained_s` at a raised
        step lower it to `overload_limit` again, for a new hold (`_adapt`)."""
        self._timer = None
        now = time.monotonic()
        if now - self._refused_at >= self._step_s:
            self.limit = min(self.limit * 2, self.ceiling)
            self._refusing_since = now
            log.info("no request refused for %g s: admitting %d requests at once (--max-in-flight %d)",
                     self._step_s, self.limit, self.ceiling)
        if self.limit < self.ceiling:
            self._timer = asyncio.get_running_loop().call_later(self._step_s, self._step_up)


def _refusal_parts(message: str) -> tuple[bytes, bytes]:
    """A refusal's own headers up to its request id, and what follows them (the blank line, the body)."""
    body = dump_json({"error": message})
    return (b"content-type: application/json\r\nretry-after: 1\r\ncontent-length: %d\r\n" % len(body),
            b"\r\n" + body)


#: headers that take a request off the fast path (`plain_request`): they change its framing or the
#: connection's fate, which the parser then handles.
_NOT_PLAIN = (b"\r\ntransfer-encoding:", b"\r\nexpect:", b"\r\nconnection:", b"\r\nupgrade:")


def plain_request(data: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """(method, path, the ``x-request-id`` header if any) when `data` is exactly one whole HTTP/1.1
    request in the plainest form, else None: a request line ``METHOD /target HTTP/1.1``, headers with
    neither ``Transfer-Encoding``, ``Expect``, ``Connection`` nor ``Upgrade``, at most one
    ``Content-Length`` and then exactly that many bytes of body. A server over its limit refuses such a
    request without handing it to the HTTP parser (`protocol`): eight parser callbacks into Python cost
    more than the refusal. Anything else (a partial request, two pipelined, another version, a header
    that needs the parser's care) returns None and goes through the parser as usual. Malformed header
    lines are not looked for: such a request gets the 503 where the parser would have answered 400."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    line_end = data.find(b"\r\n")
    parts = data[:line_end].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not parts[1].startswith(b"/"):
        return None
    method = parts[0]
    if not (method.isalpha() and method.isupper()):
        return None
    head = data[line_end:end + 2].lower()  # "\r\nname: value\r\n...\r\n", as long as the original
    for name in _NOT_PLAIN:
        if name in head:
            return None
    length = 0
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        value = head[at + 17:head.find(b"\r\n", at + 2)].strip()
        if not value.isdigit() or head.find(b"\r\ncontent-length:", at + 2) >= 0:
            return None
        length = int(value)
    if len(data) != end + 4 + length:
        return None
    path = parts[1].partition(b"?")[0]
    headers: list[tuple[bytes, bytes]] = []
    at = head.find(b"\r\nx-request-id:")
    if at >= 0:
        value_at = line_end + at + 15
        headers.append((b"x-request-id", data[value_at:line_end + head.find(b"\r\n", at + 2)].strip()))
    return method, path, headers


#: `plain_request`'s answers by request head (request line and headers), for heads without an
#: ``x-request-id``: (the length of a whole request with that head, method, path). Clients repeat the
#: same few heads, and under overload each is refused thousands of times a second: a lookup costs
#: ~0.3 µs where `plain_request` costs ~3.5 µs (2 cores, a 670-byte request).
_plain_heads: dict[bytes, tuple[int, bytes, bytes]] = {}
#: most heads remembered (all forgotten when full, so varied heads cost a lookup and no memory).
_PLAIN_HEADS_MAX = 256


def remembered_plain_request(data: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]] | None:
    """`plain_request(data)`, remembered by head (`_plain_heads`): the protocol's refusal of a whole plain
    request past the limit (`protocol.AuguryHttpProtocol`)."""
    end = data.find(b"\r\n\r\n") + 4
    if end < 4:
        return None
    known = _plain_heads.get(data[:end])
    if known is not None and known[0] == len(data):
        return known[1], known[2], []
    plain = plain_request(data)
    if plain is not None and not plain[2]:  # a head with an x-request-id is seldom seen twice
        if len(_plain_heads) >= _PLAIN_HEADS_MAX:
            _plain_heads.clear()
        _plain_heads[data[:end]] = (len(data), plain[0], plain[1])
    return plain
