"""One HTTP/1.1 request and its response, as augury's protocol (`serve.protocol`) hands them to the app.

`Cycle` is the ASGI ``receive`` and ``send`` of one request: the body as it arrives (handed over without
waiting when it is all there), and the response held until its last body message, then written whole
through the connection (one write, at the end of the loop's turn), or streamed, chunked when it gave no
length. It also takes augury's whole-response extension (`WHOLE_RESPONSE`). Header names are checked
once each per process; values for control characters every time (no response splitting).
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Scope

if TYPE_CHECKING:
    from augury.serve.protocol import AuguryHttpProtocol

log = logging.getLogger("augury.serve.http")

_HEADER_NAME_BAD = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_HEADER_VALUE_BAD = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
#: the ASGI extension this protocol offers (in ``scope["extensions"]``): a message of this type carries a
#: whole response at once: ``status``, ``headers`` and ``body``, as ``http.response.start`` and one
#: final ``http.response.body`` would (`wire.send_response` uses it where offered).
WHOLE_RESPONSE = "augury.http.response.whole"


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}
_NO_BODY = frozenset({204, 304}) | frozenset(range(100, 200))
#: header names already found valid (lower-cased), so each is checked once per process.
_good_names: set[bytes] = set()



def plain_response(status: int, text: bytes, defaults: list[tuple[bytes, bytes]]) -> bytes:
    """A whole text/plain response that closes the connection (for errors raised before the app)."""
    return b"".join([STATUS_LINES[status], *[n + b": " + v + b"\r\n" for n, v in defaults],
                     b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n\r\n" % len(text), text])


class Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` the app gets."""

    __slots__ = ("admitted", "body", "chunked", "conn", "continue_sent", "dispatched", "done",
                 "expect_continue", "gated", "gone", "head", "keep_alive", "keep_alive_said", "length_left",
                 "more_body", "scope", "started", "status", "waiter")

    def __init__(self, conn: AuguryHttpProtocol, scope: Scope, *, keep_alive: bool,
                 expect_continue: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.dispatched = False  # handed to the app (or queued behind the request before it)
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
        self.gated = False  # subject to the server's admission limit (`serve.admission`)
        self.admitted = False  # holds an admission place, given back when the app returns

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
            await self._call(app)
        finally:
            if self.admitted and conn.gate is not None:  # the app's work for it is over, answered or not
                self.admitted = False
                conn.gate.done()

    async def _call(self, app: ASGIApp) -> None:
        conn = self.conn
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            log.error("exception in the ASGI application", exc_info=exc)
            if (not self.started or self.head) and not self.gone:  # nothing written yet: a clean 500
                self.keep_alive = False
                conn.write(plain_response(500, b"Internal Server Error", conn.state.default_headers))
                self._finish()
            else:
                self._abort()
            if not isinstance(exc, Exception):
                raise
        else:
            if not self.started and not self.gone:
                log.error("the ASGI application returned without starting a response")
                self.keep_alive = False
                conn.write(plain_response(500, b"Internal Server Error", conn.state.default_headers))
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
