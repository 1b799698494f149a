"""augury's HTTP/1.1 protocol: httptools parsing, one socket write per response, for uvicorn's ``http=`` hook.

Why not uvicorn's own protocol: it writes a response's status line and headers when the app sends
``http.response.start`` and the body when it sends ``http.response.body``, two ``write`` system calls and
often two wake-ups of the client for every small answer; and it checks every header of every response
with two regular expressions. A predict or lookup answer is a few hundred bytes, so those costs are a
large share of a request (measured on 2 cores, in process: a static lookup 31 µs of CPU through uvicorn's
protocol, see BENCHMARKS.md for what this one gives).

This protocol is an `asyncio.Protocol` that uvicorn runs through its documented ``http=`` setting
(``uvicorn.Config(http=AuguryHttpProtocol)``), using only what that hook hands every protocol: the
`Config`'s public settings (the app, ``root_path``, ``limit_concurrency``, ``timeout_keep_alive``) and the
`ServerState` (its ``connections`` and ``tasks``, which uvicorn's graceful shutdown waits on, its
``default_headers`` and ``total_requests``). It reads and sets no state of uvicorn's own protocols. Any
other ASGI server runs augury's app as well, with plain ASGI messages; this protocol only makes them cheap:

- **One write per response, at the end of the loop's turn.** A response is held until its last body
  message and written whole (status line, the server's default headers, the app's headers, the body):
  one system call, made with the turn's other answers once the turn's requests are all read
  (`_TurnWriter`). A streamed response (``more_body``) goes out as it comes, chunked when it gave no length.
- **Headers checked once each.** A header name is checked when first seen and remembered (an app sends
  the same few names); values are checked for control characters (response splitting) every time.
- **No event per request.** A body that has arrived by the time the app asks for it (every small request)
  is handed over without waiting; only a slow body makes ``receive`` wait.

The HTTP behaviour is uvicorn's (tests/serve/test_protocol.py holds the two to the same bytes on the same
requests): keep-alive and its idle timeout, pipelining, ``Expect: 100-continue``, HEAD, HTTP/1.0, a 400 and
close on a malformed request, a 500 when the app fails before answering, back-pressure both ways. Two
differences come from holding a response until its body: an app that fails after
``http.response.start`` but before any body still gets a clean 500 (uvicorn has sent the head by then and
can only close), and a response without a length given in one body message gets a ``content-length``
(uvicorn, having sent the head, must use chunked encoding).
Upgrades (WebSocket, h2c) are refused with a 400: augury serves none.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import re
import urllib.parse
import weakref
from collections import deque
from typing import Any, cast

from starlette.types import ASGIApp, Message, Scope

try:
    import httptools
except ModuleNotFoundError:  # only the protocol needs it (`run.http_protocol` checks); the constants do not
    httptools = None  # type: ignore[assignment]

log = logging.getLogger("augury.serve.http")

_HEADER_NAME_BAD = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_HEADER_VALUE_BAD = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
#: the ASGI extension this protocol offers (in ``scope["extensions"]``): a message of this type carries a
#: whole response at once: ``status``, ``headers`` and ``body``, as ``http.response.start`` and one
#: final ``http.response.body`` would (`wire.send_response` uses it where offered).
WHOLE_RESPONSE = "augury.http.response.whole"
_EXTENSIONS: dict[str, dict[str, Any]] = {WHOLE_RESPONSE: {}}
#: a request body buffered past this many bytes pauses reading until the app takes it.
HIGH_WATER = 65536


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_NO_BODY = frozenset({204, 304}) | frozenset(range(100, 200))
#: the server's default headers as last rendered: [the list the server state held, the bytes].
_defaults: list[Any] = [None, b""]
#: header names already found valid (lower-cased), so each is checked once per process.
_good_names: set[bytes] = set()


class _TurnWriter:
    """The writes of one event loop's connections, held until the end of the loop's turn, then made in
    order (a ``None`` closes its transport there). A turn's answers then leave together, after every
    request that turn brought has been read: the clients, woken together, send their next requests
    together, and the next turn finds them all at once. Writing each answer as soon as it is made wakes
    its client at once, and the loop then turns once per request (measured on 2 cores, static lookups
    under wrk at 32 connections: ~20,000 requests/s written at once, ~25,000 at the end of the turn)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.pending: list[tuple[asyncio.Transport, bytes | None]] = []

    def write(self, transport: asyncio.Transport, data: bytes | None) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append((transport, data))

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for transport, data in pending:
            if transport.is_closing():
                continue
            if data is None:
                transport.close()
            else:
                transport.write(data)


#: each event loop's `_TurnWriter` (a server has one loop; the tests run several, one per thread).
_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _TurnWriter] = weakref.WeakKeyDictionary()


def _writer(loop: asyncio.AbstractEventLoop) -> _TurnWriter:
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = _TurnWriter(loop)
    return writer


def _plain_response(status: int, text: bytes, defaults: list[tuple[bytes, bytes]]) -> bytes:
    """A whole text/plain response that closes the connection (for errors raised before the app)."""
    return b"".join([STATUS_LINES[status], *[n + b": " + v + b"\r\n" for n, v in defaults],
                     b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n" % len(text), text])


class AuguryHttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection (see the module docstring). The constructor is the one uvicorn's ``http=``
    hook calls for every protocol class."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        if not config.loaded:
            config.load()
        self.app: ASGIApp = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.root_path: str = config.root_path
        self.limit_concurrency: int | None = config.limit_concurrency
        self.timeout_keep_alive: float = config.timeout_keep_alive
        self.state = server_state
        self.app_state = app_state
        self.parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3 has no leniencies
            # a request saying "Connection: close" followed by more bytes is answered, then closed
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: asyncio.Transport | None = None
        self.writer: _TurnWriter | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.cycle: Cycle | None = None  # the request being answered (or the last one)
        self.pipeline: deque[Cycle] = deque()  # requests parsed while an earlier one is answered
        self.idle_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None  # loop.time() the connection went idle; None while busy
        self.reading_paused = False
        self.writable: asyncio.Future[None] | None = None  # set while the transport asks us to wait
        # the request being parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.parsing: Cycle | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.state.connections.add(self)
        self.transport = transport = cast(asyncio.Transport, transport)
        self.writer = _writer(self.loop)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self._stop_idle_timer()
        for cycle in (self.cycle, *self.pipeline):
            if cycle is not None:
                cycle.lost()
        self.pipeline.clear()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def eof_received(self) -> bool | None:
        return None

    def data_received(self, data: bytes) -> None:
        self.idle_since = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, b"Protocol upgrades are not supported.")
        except httptools.HttpParserError:
            log.warning("invalid HTTP request received")
            self._refuse(400, b"Invalid HTTP request received.")

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name, value = name.lower(), value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        if parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade next: refused there
        version = parser.get_http_version()
        url = httptools.parse_url(self.url)
        raw_path: bytes = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope: Scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": version,
            "server": self.server, "client": self.client, "scheme": self.scheme,
            "method": parser.get_method().decode("ascii"), "root_path": self.root_path,
            "path": self.root_path + path, "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": url.query or b"", "headers": self.headers, "state": self.app_state.copy(),
            "extensions": _EXTENSIONS,
        }
        cycle = Cycle(self, scope, keep_alive=version != "1.0" and parser.should_keep_alive(),
                      expect_continue=self.expect_continue)
        self.parsing = cycle
        if self.cycle is None or self.cycle.done:
            self._start(cycle)
        else:  # pipelined behind one still being answered
            self.pipeline.append(cycle)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is not None and not cycle.done:
            cycle.body_arrived(body)
            if len(cycle.body) > HIGH_WATER:
                self._pause_reading()

    def on_message_complete(self) -> None:
        cycle, self.parsing = self.parsing, None
        if cycle is not None:
            cycle.body_complete()

    # the connection's side of a request
    def _start(self, cycle: Cycle) -> None:
        self.cycle = cycle
        limit = self.limit_concurrency
        state = self.state
        overloaded = limit is not None and (len(state.connections) >= limit or len(state.tasks) >= limit)
        task = self.loop.create_task(cycle.run(_unavailable if overloaded else self.app))
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)

    def response_done(self, cycle: Cycle) -> None:
        """`cycle`'s response is written: start the next pipelined request, or wait for one."""
        self.state.total_requests += 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not cycle.keep_alive:
            self.close()
            return
        self._resume_reading()
        if self.pipeline:
            self._start(self.pipeline.popleft())
        else:
            self._idle()

    def default_head(self) -> bytes:
        """The server's default headers (``date``), rendered once per list (uvicorn renews it each second)."""
        defaults = self.state.default_headers
        if _defaults[0] is not defaults:
            _defaults[:] = [defaults, b"".join([n + b": " + v + b"\r\n" for n, v in defaults])]
        head: bytes = _defaults[1]
        return head

    def write(self, data: bytes) -> None:
        """Write `data` at the end of this loop turn (`_TurnWriter`)."""
        if self.transport is not None and self.writer is not None and not self.transport.is_closing():
            self.writer.write(self.transport, data)

    def close(self) -> None:
        """Close the connection once what was written before is out (at the end of this loop turn)."""
        if self.transport is not None and self.writer is not None and not self.transport.is_closing():
            self.writer.write(self.transport, None)

    async def drain(self) -> None:
        if self.writable is not None:
            await self.writable

    def body_taken(self) -> None:
        """The app took the buffered body: read on."""
        if not self.pipeline:
            self._resume_reading()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close when idle, else after the response in progress."""
        if self.cycle is None or self.cycle.done:
            self.close()
        else:
            self.cycle.keep_alive = False

    def _refuse(self, status: int, text: bytes) -> None:
        if self.cycle is not None and not self.cycle.done:
            self.cycle.lost()  # its answer could no longer be told apart: the connection closes
        self.write(_plain_response(status, text, self.state.default_headers))
        self.close()

    def _idle(self) -> None:
        """The connection waits for its next request from now: closed if none comes within the keep-alive
        timeout. One timer per connection, re-armed only when it fires early, rather than one made and
        cancelled per request (data_received merely marks the connection busy)."""
        self.idle_since = self.loop.time()
        if self.idle_timer is None:
            self.idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self.idle_timer = None
        if self.idle_since is None:  # busy since: a request came
            return
        left = self.idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:  # it went busy and idle again meanwhile: wait for the rest
            self.idle_timer = self.loop.call_later(left, self._idle_timeout)
        elif self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _stop_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()


class Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` the app gets."""

    __slots__ = ("body", "chunked", "conn", "continue_sent", "done", "expect_continue", "gone", "head",
                 "keep_alive", "keep_alive_said", "length_left", "more_body", "scope", "started", "status",
                 "waiter")

    def __init__(self, conn: AuguryHttpProtocol, scope: Scope, *, keep_alive: bool,
                 expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.body = b""
        self.more_body = True
        self.waiter: asyncio.Future[None] | None = None
        self.gone = False  # the client disconnected
        self.started = False  # http.response.start received
        self.status = 200
        self.head: bytes = b""  # the response head, until the body is written
        self.keep_alive_said = False  # the app's headers say Connection: close
        self.chunked = False
        self.length_left: int | None = None
        self.done = False  # the whole response is written (or never will be)

    # the connection's side
    def body_arrived(self, data: bytes) -> None:
        self.body += data
        self._wake()

    def body_complete(self) -> None:
        self.more_body = False
        self._wake()

    def lost(self) -> None:
        self.gone = True
        self.keep_alive = False
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, app: ASGIApp) -> None:
        conn = self.conn
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("exception in the ASGI application", exc_info=exc)
            if (not self.started or self.head) and not self.gone:  # nothing written yet: a clean 500
                self.keep_alive = False
                conn.write(_plain_response(500, b"Internal Server Error", conn.state.default_headers))
                self._finish()
            else:
                self._abort()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.started and not self.gone:
                log.error("the ASGI application returned without starting a response")
                self.keep_alive = False
                conn.write(_plain_response(500, b"Internal Server Error", conn.state.default_headers))
                self._finish()
            elif not self.done and not self.gone:
                log.error("the ASGI application returned without completing its response")
                self._abort()

    # ASGI
    async def receive(self) -> Message:
        if self.expect_continue and not self.continue_sent and not self.started:
            self.continue_sent = True
            self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not self.gone and not self.done and self.more_body and not self.body:
            self.waiter = self.conn.loop.create_future()
            self.conn.body_taken()
            await self.waiter
        if self.gone or self.done:
            return {"type": "http.disconnect"}
        body, self.body = self.body, b""
        self.conn.body_taken()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.writable is not None and not self.gone:
            await conn.drain()
        if self.gone:
            return
        kind = message["type"]
        if kind == WHOLE_RESPONSE and not self.started:
            self.started = True
            self._start(message["status"], message["headers"])
            self._body(message["body"], False)
        elif not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self.started = True
            self._start(message["status"], message.get("headers", ()))
        elif not self.done:
            if kind != "http.response.body":
                raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} after the response was completed")

    def _start(self, status: int, headers: Any) -> None:
        parts = [STATUS_LINES[status], self.conn.default_head()]
        length: int | None = None
        chunked = False
        for name, value in headers:
            if name not in _good_names:
                if _HEADER_NAME_BAD.search(name):
                    raise RuntimeError("invalid HTTP header name")
                name = name.lower()
                if len(_good_names) < 1024:
                    _good_names.add(name)
            if _HEADER_VALUE_BAD.search(value):
                raise RuntimeError("invalid HTTP header value")
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"connection" and b"close" in [t.strip().lower() for t in value.split(b",")]:
                self.keep_alive = False
                self.keep_alive_said = True
            parts.append(name + b": " + value + b"\r\n")
        self.length_left = length
        self.chunked = chunked
        self.head = b"".join(parts)
        self.status = status

    def _body(self, body: bytes, more: bool) -> None:
        head = self.head
        if head:  # the first body message: the head goes out with it
            self.head = b""
            no_body = self.scope["method"] == "HEAD" or self.status in _NO_BODY
            tail = [] if self.keep_alive or self.keep_alive_said else [b"connection: close\r\n"]
            if self.length_left is None and not self.chunked and not no_body:
                if more:
                    self.chunked = True
                    tail.append(b"transfer-encoding: chunked\r\n")
                else:
                    self.length_left = len(body)
                    tail.append(b"content-length: %d\r\n" % len(body))
            tail.append(b"\r\n")
            if no_body:
                self.conn.write(head + b"".join(tail))
                body = b""
                self.chunked = False
                self.length_left = None
            else:
                self.conn.write(head + b"".join(tail) + self._framed(body, more))
        elif self.scope["method"] != "HEAD":
            self.conn.write(self._framed(body, more))
        if not more:
            if self.length_left not in (None, 0):
                self._abort()
                raise RuntimeError("response content shorter than Content-Length")
            self._finish()

    def _framed(self, body: bytes, more: bool) -> bytes:
        if self.chunked:
            chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            return chunk if more else chunk + b"0\r\n\r\n"
        if self.length_left is not None:
            if len(body) > self.length_left:
                self._abort()
                raise RuntimeError("response content longer than Content-Length")
            self.length_left -= len(body)
        return body

    def _finish(self) -> None:
        self.done = True
        self._wake()
        self.conn.response_done(self)

    def _abort(self) -> None:
        """The response cannot be completed properly: close the connection."""
        self.done = True
        self.keep_alive = False
        self._wake()
        self.conn.close()


async def _unavailable(scope: Scope, receive: Any, send: Any) -> None:
    """The answer past uvicorn's ``limit_concurrency``."""
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": b"Service Unavailable"})


def _address(info: Any) -> tuple[str, int] | None:
    """A socket address as ASGI gives it: (host, port) for IP sockets, None otherwise."""
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None
