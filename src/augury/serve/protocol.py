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
  (`turns.TurnWriter`). A streamed response (``more_body``) goes out as it comes, chunked when it gave
  no length.
- **Headers checked once each.** A header name is checked when first seen and remembered (an app sends
  the same few names); values are checked for control characters (response splitting) every time.
- **No event per request.** A body that has arrived by the time the app asks for it (every small request)
  is handed over without waiting; only a slow body makes ``receive`` wait.

This module is the connection (parsing, keep-alive, pipelining, the turn's writes); `http_cycle.Cycle` is
one request's ``receive`` and ``send``.

The HTTP behaviour is uvicorn's (tests/serve/test_protocol.py holds the two to the same bytes on the same
requests): keep-alive and its idle timeout, pipelining, ``Expect: 100-continue``, HEAD, HTTP/1.0, a 400 and
close on a malformed request, a 500 when the app fails before answering, back-pressure both ways. Two
differences come from holding a response until its body: an app that fails after
``http.response.start`` but before any body still gets a clean 500 (uvicorn has sent the head by then and
can only close), and a response without a length given in one body message gets a ``content-length``
(uvicorn, having sent the head, must use chunked encoding).
Upgrades (WebSocket, h2c) are refused with a 400: augury serves none.

Past the app's admission limit (`serve.admission`) a request is refused here, before anything is built
for it; connections to a probe port (``--probe-port``) are `ProbeHttpProtocol`s, which answer only the
probes and the metrics scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from starlette.types import ASGIApp, Scope

from augury.serve.admission import ADMITTED, GATE_KEY, remembered_plain_request
from augury.serve.http_cycle import STATUS_LINES, WHOLE_RESPONSE, Cycle, plain_response
from augury.serve.turns import TurnWriter, writer_of

if TYPE_CHECKING:
    from augury.serve.admission import Admission

try:
    import httptools
except ModuleNotFoundError:  # only the protocol needs it (`run.http_protocol` checks); the constants do not
    httptools = None  # type: ignore[assignment]

log = logging.getLogger("augury.serve.http")

_EXTENSIONS: dict[str, dict[str, Any]] = {WHOLE_RESPONSE: {}}
#: the extensions of a request under an app's admission limit: the app need not check it again.
_ADMITTED_EXTENSIONS: dict[str, dict[str, Any]] = {**_EXTENSIONS, ADMITTED: {}}
#: a request body buffered past this many bytes pauses reading until the app takes it.
HIGH_WATER = 65536


#: the server's default headers as last rendered: [the list the server state held, the bytes].
_defaults: list[Any] = [None, b""]


class AuguryHttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection (see the module docstring). The constructor is the one uvicorn's ``http=``
    hook calls for every protocol class.

    Every phase of a connection has a time limit, watched by one timer per connection (re-armed only
    when it fires early): waiting for a request, the connection's first one included (uvicorn's
    ``timeout_keep_alive``; then closed); a request's head, from its first byte (`header_timeout`; then
    408 and closed); its body, from the end of its head (`body_timeout`; then 408 and closed, the app
    seeing the client gone). A slow client holds its connection for that long at most, not forever. The
    app's own work has no limit here (augury's requests have deadlines of their own)."""

    #: seconds a request's head (request line and headers) may take to arrive, from its first byte.
    header_timeout = 10.0
    #: seconds a request's body may take to arrive, from the end of its head.
    body_timeout = 30.0

    #: local ports whose connections are probe connections (`ProbeHttpProtocol`).
    probe_ports: frozenset[int] = frozenset()

    @classmethod
    def configure(cls, *, header_timeout: float, body_timeout: float,
                  probe_ports: Iterable[int] = ()) -> None:
        """Set the time limits of this process's connections and its probe ports (`augury serve` does,
        in every worker process, from ``--header-timeout``, ``--body-timeout`` and ``--probe-port``)."""
        cls.header_timeout, cls.body_timeout = header_timeout, body_timeout
        cls.probe_ports = frozenset(probe_ports)

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
        self.parser = self._new_parser()
        self.transport: asyncio.Transport | None = None
        self.writer: TurnWriter | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.cycle: Cycle | None = None  # the request being answered (or the last one)
        self.pipeline: deque[Cycle] = deque()  # requests parsed while an earlier one is answered
        self.watchdog: asyncio.TimerHandle | None = None
        self.phase = "idle"  # "idle" (waiting for a request), "head", "body", or "app" (no limit)
        self.deadline: float | None = None  # loop.time() by which the phase must end
        self.reading_paused = False
        self.writable: asyncio.Future[None] | None = None  # set while the transport asks us to wait
        # the request being parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.parsing: Cycle | None = None
        #: the app's admission limit (`serve.admission`), left in the lifespan state; None: no limit here.
        self.gate: Admission | None = app_state.get(GATE_KEY)
        self.refusing: tuple[bytes, bool] | None = None  # a request refused at its head: (method, keep-alive)

    def _new_parser(self) -> Any:
        """An HTTP parser that calls this connection's methods (it takes them when it is made)."""
        parser = httptools.HttpRequestParser(self)
        with contextlib.suppress(AttributeError):  # httptools < 0.6.3 has no leniencies
            # a request saying "Connection: close" followed by more bytes is answered, then closed
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.state.connections.add(self)
        self.transport = transport = cast(asyncio.Transport, transport)
        self.writer = writer_of(self.loop)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        if self.probe_ports and self.server is not None and self.server[1] in self.probe_ports:
            # a connection to the probe port: served as a probe connection (decided once per
            # connection here, so requests on the serving port pay nothing for it)
            from augury.serve.probe_port import ProbeHttpProtocol  # (it subclasses this one)

            self.__class__ = ProbeHttpProtocol
            self.parser = self._new_parser()  # one that calls the probe connection's methods
            self.gate = None
        self._watch("idle", self.timeout_keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.deadline = None
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        for cycle in (self.cycle, *self.pipeline):
            if cycle is not None:
                cycle.lost()
        self.pipeline.clear()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def eof_received(self) -> bool | None:
        return None

    def data_received(self, data: bytes) -> None:
        gate = self.gate
        if (gate is not None and gate.admitted >= gate.limit and self.phase == "idle"
                and self._refuse_plain(data)):
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
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
        self.refusing = None
        self._watch("head", self.header_timeout)

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
        self._watch("body", self.body_timeout)
        version = parser.get_http_version()
        gate = self.gate
        gated = gate is not None and not gate.exempt(self.url)
        if (gated and gate is not None and gate.admitted >= gate.limit and self.url.startswith(b"/")
                and (self.cycle is None or self.cycle.done)):
            self._refuse_early(version)
            return
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
            "extensions": _EXTENSIONS if gate is None else _ADMITTED_EXTENSIONS,
        }
        cycle = Cycle(self, scope, keep_alive=version != "1.0" and parser.should_keep_alive(),
                      expect_continue=self.expect_continue)
        cycle.gated = gated
        self.parsing = cycle
        if self._streams(self.headers, self.expect_continue):
            self._dispatch(cycle)
        # else: dispatched once its body is here (on_message_complete)

    def on_body(self, body: bytes) -> None:
        if self.refusing is not None:
            return  # a refused request's small body: dropped as it is parsed
        cycle = self.parsing
        if cycle is not None and not cycle.done:
            cycle.body_arrived(body)
            if len(cycle.body) > HIGH_WATER:
                self._pause_reading()

    def on_message_complete(self) -> None:
        if self.refusing is not None:
            method, keep_alive = self.refusing
            self.refusing = None
            if method:  # else answered at its head already (`_refuse_early`)
                self.state.total_requests += 1
                self._write_refusal(method, self.headers, keep_alive)
                if keep_alive:
                    self._watch("idle", self.timeout_keep_alive)
                else:
                    self.close()
            return
        self._watch("app", None)
        cycle, self.parsing = self.parsing, None
        if cycle is not None:
            cycle.body_complete()
            if not cycle.dispatched:
                self._dispatch(cycle)

    # the connection's side of a request
    @staticmethod
    def _streams(headers: list[tuple[bytes, bytes]], expect_continue: bool) -> bool:
        """Whether the app gets a request as soon as its head is here, its body streaming in: when the
        body may be large (over `HIGH_WATER`, or chunked, its length unknown) or the client waits for
        ``100 Continue`` before sending it. Any other request reaches the app with its whole body, so a
        client sending its body slowly holds only its connection (within `body_timeout`), never a place
        among the requests the app is handling (augury's --max-in-flight counts those)."""
        if expect_continue:
            return True
        for name, value in headers:
            if name == b"transfer-encoding":
                return True
            if name == b"content-length":
                return not value.isdigit() or int(value) > HIGH_WATER
        return False

    def _dispatch(self, cycle: Cycle) -> None:
        cycle.dispatched = True
        if self.cycle is None or self.cycle.done:
            self._start(cycle)
        else:  # pipelined behind one still being answered
            self.pipeline.append(cycle)
            self._pause_reading()

    def _start(self, cycle: Cycle) -> None:
        self.cycle = cycle
        gate = self.gate
        if cycle.gated and gate is not None:
            if not gate.admit():  # filled up while its body came, or while it was pipelined
                if cycle.more_body:  # its body is not read: the connection cannot carry another request
                    cycle.keep_alive = False
                self._write_refusal(cycle.scope["method"].encode("ascii"), cycle.scope["headers"],
                                    cycle.keep_alive)
                cycle.done = True
                self.response_done(cycle)
                return
            cycle.admitted = True
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
        elif self.phase == "app":  # nothing of a next request read yet
            self._watch("idle", self.timeout_keep_alive)

    def default_head(self) -> bytes:
        """The server's default headers (``date``), rendered once per list (uvicorn renews it each second)."""
        defaults = self.state.default_headers
        if _defaults[0] is not defaults:
            _defaults[:] = [defaults, b"".join([n + b": " + v + b"\r\n" for n, v in defaults])]
        head: bytes = _defaults[1]
        return head

    def write(self, data: bytes) -> None:
        """Write `data` at the end of this loop turn (`turns.TurnWriter`)."""
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

    def _refuse_plain(self, data: bytes) -> bool:
        """Refuse the request `data` holds whole, the server being at its admission limit, without the
        parser (`admission.plain_request`, which says what it takes); False if it is not such a request,
        or its path is never refused. The parser is between requests here, so skipping one keeps it in
        step."""
        plain = remembered_plain_request(data)
        if plain is None:
            return False
        method, path, headers = plain
        assert self.gate is not None
        if self.gate.exempt(path):
            return False
        self.state.total_requests += 1
        self._write_refusal(method, headers, True)
        self._watch("idle", self.timeout_keep_alive)
        return True

    def _refuse_early(self, version: str) -> None:
        """Refuse the request whose head was just parsed, the server being at its admission limit, before
        anything is built for it: at once (closing) if its body would stream in, else once its small body
        is read and dropped (`on_message_complete`), keeping the connection."""
        method: bytes = self.parser.get_method()
        if self._streams(self.headers, self.expect_continue):
            self.state.total_requests += 1
            self._write_refusal(method, self.headers, False)
            self.close()
            self.refusing = (b"", False)  # answered: what may still come of its body is dropped
            return
        self.refusing = (method, version != "1.0" and self.parser.should_keep_alive())

    def _write_refusal(self, method: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        """Write the admission limit's 503 (`Admission.refusal`); it says ``connection: close`` unless
        `keep_alive` (the caller closes)."""
        assert self.gate is not None
        refusal = self.gate.refusal(method, headers, not keep_alive)
        self.write(STATUS_LINES[503] + self.default_head() + refusal)

    def _refuse(self, status: int, text: bytes) -> None:
        if self.cycle is not None and not self.cycle.done:
            self.cycle.lost()  # its answer could no longer be told apart: the connection closes
        self.write(plain_response(status, text, self.state.default_headers))
        self.close()

    def _watch(self, phase: str, seconds: float | None) -> None:
        """Enter `phase`, which must end within `seconds` (None: no limit)."""
        self.phase = phase
        if seconds is None:
            self.deadline = None
            return
        self.deadline = self.loop.time() + seconds
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(seconds, self._check)

    def _check(self) -> None:
        """The watchdog: act on a phase past its deadline, or wait for the rest of the current one."""
        self.watchdog = None
        if self.deadline is None or self.transport is None or self.transport.is_closing():
            return
        left = self.deadline - self.loop.time()
        if left > 0:
            self.watchdog = self.loop.call_later(left, self._check)
        elif self.phase == "idle":
            self.transport.close()
        elif self.phase == "head":
            log.info("closing a connection whose request head took longer than %g s", self.header_timeout)
            self._refuse(408, b"Request head not received in time.")
        else:
            log.info("closing a connection whose request body took longer than %g s", self.body_timeout)
            self._refuse(408, b"Request body not received in time.")

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()


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
