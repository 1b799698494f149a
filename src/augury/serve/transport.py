"""One socket write per response: uvicorn's httptools protocol with its writes coalesced per loop turn.

uvicorn writes a response's status line and headers when the app sends ``http.response.start``, and its
body when the app sends ``http.response.body``: two ``write`` system calls, two TCP segments, and on the
client's side often two wake-ups, for every small answer. Measured here on loopback (2 cores, wrk at 32
connections, a raw ASGI endpoint answering a 237-byte JSON body after N µs of work): 57,000 -> 82,000
requests/s at N = 0, 30,800 -> 39,500 at N = 10, 19,600 -> 23,600 at N = 20 with one write instead of
two.

`CoalescingTransport` stands between the protocol and the real transport: writes made during one turn of
the event loop are joined and handed to the transport once, at the end of that turn (``call_soon``), so
a response sent without awaiting anything in between (every augury route) leaves in one write. Nothing
waits longer than the loop turn it was written in; closing the transport flushes first. Everything else
(flow control, peer addresses, ``set_protocol``) is the real transport's.

`CoalescingHttpToolsProtocol` is uvicorn's httptools protocol with that transport: ``augury serve`` passes
it to uvicorn (``http=``) when httptools is installed.

**Whole responses** (`write_whole`). Sending a response as the two ASGI messages costs uvicorn ~2 µs of
Python with two headers and ~3.5 µs with six (two awaits; per header two regular-expression checks, a
lower-casing and the special cases), more than the rest of a cached lookup's bookkeeping. The hot
routes, whose status, headers and body are all known at once, hand them to `write_whole` instead, which,
when the request came through this protocol, does what uvicorn's `RequestResponseCycle.send` would do for
that response (the same status line, the server's default headers, the same state changes) in one step,
and writes the bytes through the coalescing transport. Measured with ``benchmarks/http_bench.py``
(static lookups by key, uniform keys, record cache off, one server process, wrk at 32 connections):
23,600 -> 28,100 requests/s. The caller's header values must be valid (visible ASCII): it checks them
once when it makes them (`service.header_value`), where uvicorn checks every one on every response.
Whenever anything differs from the plain case (another server or protocol, a uvicorn newer than the one
it was checked against (0.54) or a cycle of another shape, a response already started, write
back-pressure, a connection that closes after the response, access logging, a HEAD request),
`write_whole` returns False and the caller sends the ordinary ASGI messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle


class CoalescingTransport:
    """A transport proxy whose writes within one loop turn go out as one write (see the module docstring)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP/1.1 protocol, writing through a `CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)


#: `write_whole` mirrors `RequestResponseCycle.send` as of uvicorn 0.54 (checked by
#: tests/serve/test_transport.py); on a later uvicorn it stands aside until checked against that one.
_UVICORN_CHECKED = (0, 54)
_uvicorn_fits = tuple(int(p) for p in uvicorn.__version__.split(".")[:2] if p.isdigit()) <= _UVICORN_CHECKED

#: the instance attributes of uvicorn's `RequestResponseCycle` that `write_whole` reads or sets.
_CYCLE_FIELDS = ("transport", "flow", "default_headers", "access_log", "keep_alive", "disconnected",
                 "waiting_for_100_continue", "response_started", "response_complete", "message_event",
                 "on_response", "scope")
#: whether uvicorn's cycles have those fields (checked on the first one seen; None until then).
_cycle_fits: bool | None = None
#: the server's default headers (``date``, ``server``) as last rendered: (the list uvicorn holds, bytes).
_defaults: tuple[object, bytes] = (None, b"")


def write_whole(send: Any, status: int, headers: list[tuple[bytes, bytes]], media_type: bytes,
                body: bytes) -> bool:
    """Write a whole response (`headers` plus content type and length, then `body`) in one step if `send`
    is a `CoalescingHttpToolsProtocol` request's, and return True; return False, having done nothing, if
    the caller must send it as ASGI messages instead. Header names must be lower-case and values visible
    ASCII (see the module docstring)."""
    global _cycle_fits, _defaults
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        return False
    if _cycle_fits is None:
        _cycle_fits = _uvicorn_fits and all(name in vars(cycle) for name in _CYCLE_FIELDS)
    transport: Any = cycle.transport  # typed as asyncio's; ours when the protocol is
    if (not _cycle_fits or type(transport) is not CoalescingTransport or cycle.response_started
            or cycle.disconnected or not cycle.keep_alive or cycle.access_log or cycle.flow.write_paused
            or cycle.scope["method"] == "HEAD" or status not in STATUS_LINE):
        return False
    defaults = cycle.default_headers
    if _defaults[0] is not defaults:  # uvicorn renews the list every second (the date)
        _defaults = (defaults, b"".join([name.lower() + b": " + value + b"\r\n" for name, value in defaults]))
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    transport.write(b"".join([
        STATUS_LINE[status], _defaults[1],
        *[name + b": " + value + b"\r\n" for name, value in headers],
        b"content-type: ", media_type, b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n\r\n", body]))
    cycle.response_complete = True
    cycle.message_event.set()
    cycle.on_response()
    return True
