"""augury's HTTP protocol against uvicorn's own: the same bytes for the same requests, on real sockets.

Every scenario is sent, as raw bytes, to two real servers on 127.0.0.1 running one test app: one with
uvicorn's httptools protocol, one with `AuguryHttpProtocol`. What comes back (the default ``date`` and
``server`` headers aside) must be identical, byte for byte, including whether the connection stays open,
except where `DIFFERENT` says why not. Then augury's whole app is
served by plain uvicorn (h11 and httptools): the protocol is a speed-up, not a requirement.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import h11
import httpx
import pytest
import uvicorn

from augury.serve import ServeSettings, create_app
from augury.serve.http_cycle import WHOLE_RESPONSE
from augury.serve.protocol import AuguryHttpProtocol

from .helpers import LiveServer, add_model


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The test app: one behaviour per path."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"text/plain"), (b"x-path", path.encode())]}
    if path == "/plain":
        start["headers"].append((b"content-length", b"5"))
        await send(start)
        await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/whole":  # the extension where offered, the two messages elsewhere: the same bytes
        headers = [*start["headers"], (b"content-length", b"5")]
        if WHOLE_RESPONSE in scope.get("extensions", {}):
            await send({"type": WHOLE_RESPONSE, "status": 200, "headers": headers, "body": b"hello"})
        else:
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": b"hello"})
    elif path == "/stream":
        await send(start)
        for part in (b"one", b"", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream-length":
        start["headers"].append((b"content-length", b"8"))
        await send(start)
        await send({"type": "http.response.body", "body": b"four", "more_body": True})
        await send({"type": "http.response.body", "body": b"more"})
    elif path == "/no-content":
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/close":
        start["headers"] += [(b"connection", b"close"), (b"content-length", b"3")]
        await send(start)
        await send({"type": "http.response.body", "body": b"bye"})
    elif path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        start["headers"].append((b"content-length", str(len(body)).encode()))
        await send(start)
        await send({"type": "http.response.body", "body": body})
    elif path == "/fail-before":
        raise RuntimeError("failed before answering")
    elif path == "/fail-after":
        await send(start)
        raise RuntimeError("failed while answering")
    elif path == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"a\r\nb: c")]})
    elif path == "/short":
        start["headers"].append((b"content-length", b"10"))
        await send(start)
        await send({"type": "http.response.body", "body": b"short"})
    elif path == "/silent":
        return
    else:
        start["status"] = 404
        await send(start)
        await send({"type": "http.response.body", "body": b"no such path"})


def _get(path: str, extra: bytes = b"", method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return method + b" " + path.encode() + b" HTTP/" + version + b"\r\nhost: test\r\n" + extra + b"\r\n"


SCENARIOS: dict[str, bytes] = {
    "plain": _get("/plain"),
    "whole": _get("/whole"),
    "two on one connection": _get("/plain") + _get("/whole"),
    "pipelined three": _get("/plain") + _get("/stream") + _get("/echo", b"content-length: 3\r\n",
                                                                  b"POST")[:-2] + b"\r\nabc",
    "head": _get("/plain", method=b"HEAD"),
    "head without a length": _get("/stream", method=b"HEAD"),
    "http/1.0": _get("/plain", version=b"1.0"),
    "http/1.0 keep-alive": _get("/plain", b"connection: keep-alive\r\n", version=b"1.0"),
    "client asks to close": _get("/plain", b"connection: close\r\n"),
    "client asks to close, then sends more": _get("/plain", b"connection: close\r\n") + _get("/whole"),
    "streamed, chunked": _get("/stream"),
    "streamed with a length": _get("/stream-length"),
    "no content": _get("/no-content"),
    "app closes": _get("/close") + _get("/plain"),
    "echo": _get("/echo", b"content-length: 11\r\n", b"POST") + b"hello world",
    "echo, chunked request": _get("/echo", b"transfer-encoding: chunked\r\n", b"POST")
    + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    "echo, 100-continue": _get("/echo", b"content-length: 2\r\nexpect: 100-continue\r\n", b"POST") + b"hi",
    "percent-encoded path": _get("/pl%61in"),
    "query string": _get("/plain?a=1&b=%20"),
    "not found": _get("/nowhere"),
    "app fails before answering": _get("/fail-before"),
    "app fails while answering": _get("/fail-after"),
    "bad header value": _get("/bad-header"),
    "shorter than its length": _get("/short"),
    "app answers nothing": _get("/silent"),
    "malformed request line": b"GARBAGE\r\n\r\n",
    "bad header": b"GET /plain HTTP/1.1\r\nhost test\r\n\r\n",
    "trailing spaces in a header": _get("/echo", b"content-length: 2   \r\n", b"POST") + b"ok",
}


def _exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send `data`, read until the server closes or stays quiet for 0.3 s; (bytes, closed by the server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.settimeout(0.3)
        out = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return out, False
            if not chunk:
                return out, True
            out += chunk


def _without_date(raw: bytes) -> bytes:
    """`raw` without the server's default headers (``date`` changes every second)."""
    return re.sub(rb"(date|server): [^\r]*\r\n", b"", raw)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[int, int]]:
    with LiveServer(app, http="httptools") as theirs, LiveServer(app, http=AuguryHttpProtocol) as ours:
        yield theirs.port, ours.port


#: where the bytes differ on purpose (see `serve.protocol`): what augury's protocol answers instead.
DIFFERENT = {
    # the head is still held when the app fails: a clean 500 instead of a head and a closed connection
    "app fails while answering": b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; "
    b"charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\nInternal Server Error",
    # no length given, the whole body in one message: a content-length instead of chunked encoding
    "not found": b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\nx-path: /nowhere\r\n"
    b"content-length: 12\r\n\r\nno such path",
}


#: scenarios whose bytes uvicorn itself changed, and a release that has the change (0.29, the oldest the
#: project declares and tested in CI, frames them the old way; 0.55 the new): on an older uvicorn they are
#: compared by meaning, not bytes.
CHANGED_SINCE = {
    # a 500 with a content-length instead of chunked; "connection: close" said to HTTP/1.0 clients
    "app answers nothing": (0, 30), "app fails before answering": (0, 30),
    "http/1.0": (0, 30), "http/1.0 keep-alive": (0, 30),
}
_UVICORN = tuple(int(p) for p in uvicorn.__version__.split(".")[:2])


def _meaning(raw: bytes) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    """Each response in `raw` as (status, headers but the framing ones, body), parsed by h11."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "test")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(raw)
    conn.receive_data(b"")
    out: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            framing = {b"content-length", b"transfer-encoding", b"connection", b"date", b"server"}
            out.append((event.status_code, [(n, v) for n, v in event.headers if n not in framing], b""))
        elif isinstance(event, h11.Data):
            status, headers, body = out[-1]
            out[-1] = (status, headers, body + bytes(event.data))
        elif event is h11.NEED_DATA or isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_same_bytes_as_uvicorns_protocol(servers: tuple[int, int], scenario: str) -> None:
    theirs, ours = servers
    data = SCENARIOS[scenario]
    expected, got = _exchange(theirs, data), _exchange(ours, data)
    if scenario in DIFFERENT:
        assert _without_date(got[0]) == DIFFERENT[scenario]
        assert _without_date(expected[0]) != DIFFERENT[scenario]
        return
    if scenario in CHANGED_SINCE and CHANGED_SINCE[scenario] > _UVICORN:
        assert _meaning(got[0]) == _meaning(expected[0])  # older uvicorn frames it otherwise
    else:
        assert _without_date(got[0]) == _without_date(expected[0])
    assert got[1] == expected[1], "the connection is closed by one and not the other"
    assert expected[0] or expected[1]  # the scenario shows something


def test_a_response_leaves_in_one_write_and_the_extension_is_offered(servers: tuple[int, int]) -> None:
    """One ``send`` system call per response: the client reads the whole of it at once."""
    _, ours = servers
    with socket.create_connection(("127.0.0.1", ours), timeout=5) as sock:
        for path in ("/plain", "/whole", "/echo"):
            extra = b"content-length: 2\r\n" if path == "/echo" else b""
            method = b"POST" if path == "/echo" else b"GET"
            sock.sendall(_get(path, extra, method) + (b"hi" if extra else b""))
            time.sleep(0.05)
            first = sock.recv(65536)
            assert first.endswith(b"hello") or first.endswith(b"hi"), first


def test_an_upgrade_is_refused_and_the_connection_closed(servers: tuple[int, int]) -> None:
    _, ours = servers
    raw, closed = _exchange(ours, _get("/plain", b"connection: upgrade\r\nupgrade: websocket\r\n"))
    assert raw.startswith(b"HTTP/1.1 400 ") and b"upgrades are not supported" in raw
    assert closed


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout() -> None:
    server = LiveServer(app, http=AuguryHttpProtocol)
    server.server.config.timeout_keep_alive = 1
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(_get("/plain"))
        assert sock.recv(65536).endswith(b"hello")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server
        assert 0.5 < time.monotonic() - started < 4


def test_graceful_shutdown_finishes_the_request_in_flight() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.sleep(0.6)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    server = LiveServer(slow, http=AuguryHttpProtocol)
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(_get("/wait"))
        time.sleep(0.2)
        server.server.should_exit = True  # the shutdown starts with the request in flight
        raw = b""
        while not raw.endswith(b"ok"):
            chunk = sock.recv(65536)
            assert chunk, "the connection closed before the answer"
            raw += chunk
        assert raw.startswith(b"HTTP/1.1 200 ") and b"connection: close\r\n" in raw
        assert sock.recv(65536) == b""


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_augurys_app_runs_under_plain_uvicorn(http: str) -> None:
    """The hot routes fall back to plain ASGI messages where the extension is not offered."""
    for protocol in (http, AuguryHttpProtocol):
        app_ = create_app(ServeSettings(), add_model(), None)
        with LiveServer(app_, http=protocol) as server, httpx.Client(base_url=server.url) as client:
            instances = [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
            r = client.post("/v1/models/add:predict", json={"instances": instances})
            assert r.status_code == 200, r.text
            assert [p["value"] for p in r.json()["predictions"]] == [3.0, 7.0]
            assert r.headers["x-augury-source"] == "static=0,dynamic=2"
            v2 = client.post("/v2/models/add/infer", json={"inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.5]},
                {"name": "b", "shape": [1], "datatype": "FP64", "data": [2]}]})
            assert v2.status_code == 200 and v2.json()["outputs"][0]["data"] == [3.5]
            bad = client.post("/v1/models/add:predict", content=b"{not json")
            assert bad.status_code == 400 and "error" in bad.json()
            assert client.get("/v2/health/ready").status_code == 200
            assert client.get("/metrics").status_code == 200


class QuickTimeouts(AuguryHttpProtocol):
    header_timeout = 0.5
    body_timeout = 0.5


@pytest.fixture(scope="module")
def quick() -> Iterator[int]:
    server = LiveServer(app, http=QuickTimeouts)
    server.server.config.timeout_keep_alive = 1
    with server:
        yield server.port


def _read_until_closed(sock: socket.socket, limit_s: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes; and how long that took."""
    started, out = time.monotonic(), b""
    sock.settimeout(limit_s)
    while chunk := sock.recv(65536):
        out += chunk
    return out, time.monotonic() - started


def test_a_connection_that_never_sends_a_request_is_closed(quick: int) -> None:
    with socket.create_connection(("127.0.0.1", quick), timeout=5) as sock:
        raw, took = _read_until_closed(sock)
    assert raw == b"" and 0.5 < took < 3


def test_a_head_that_does_not_arrive_in_time_is_408_and_closed(quick: int) -> None:
    with socket.create_connection(("127.0.0.1", quick), timeout=5) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nhost: test\r\n")  # and never the blank line
        raw, took = _read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 408 ") and raw.endswith(b"Request head not received in time.")
    assert took < 3


def test_a_head_trickled_byte_by_byte_is_timed_from_its_first_byte(quick: int) -> None:
    """A slow client cannot keep a connection by sending a byte now and then."""
    head = _get("/plain")
    with socket.create_connection(("127.0.0.1", quick), timeout=5) as sock:
        started = time.monotonic()
        sent = 0
        try:
            while sent < len(head) and time.monotonic() - started < 4:
                sock.sendall(head[sent:sent + 1])
                sent += 1
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        raw, _ = _read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3


def test_a_body_that_does_not_arrive_in_time_is_408_and_closed(quick: int) -> None:
    with socket.create_connection(("127.0.0.1", quick), timeout=5) as sock:
        sock.sendall(_get("/echo", b"content-length: 10\r\n", b"POST") + b"abc")
        raw, took = _read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 408 ") and raw.endswith(b"Request body not received in time.")
    assert took < 3


def test_requests_within_the_limits_are_answered_on_a_kept_connection(quick: int) -> None:
    with socket.create_connection(("127.0.0.1", quick), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(_get("/echo", b"content-length: 2\r\n", b"POST"))
            time.sleep(0.2)  # the body comes late, but within the body's limit
            sock.sendall(b"ok")
            assert sock.recv(65536).endswith(b"ok")
            time.sleep(0.6)  # idle longer than the head's limit, shorter than keep-alive's


def test_slow_bodies_do_not_take_the_places_of_requests_in_flight() -> None:
    """Clients sending small bodies slowly hold their connections, not the app's --max-in-flight places:
    the app gets a request once its body is here."""
    app_ = create_app(ServeSettings(max_in_flight=2), add_model(), None)
    with LiveServer(app_, http=AuguryHttpProtocol) as server:
        slow = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(6)]
        try:
            for sock in slow:
                sock.sendall(b"POST /v1/models/add:predict HTTP/1.1\r\nhost: test\r\n"
                             b"content-type: application/json\r\ncontent-length: 40\r\n\r\n{\"inst")
            time.sleep(0.3)
            with httpx.Client(base_url=server.url) as client:
                r = client.post("/v1/models/add:predict", json={"instances": [{"a": 1, "b": 2}]})
                assert r.status_code == 200, r.text
                assert r.json()["predictions"][0]["value"] == 3.0
        finally:
            for sock in slow:
                sock.close()
