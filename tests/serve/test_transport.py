"""One write per response: the coalescing transport joins the writes of one loop turn, loses nothing."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import httpx

from augury.serve import hot
from augury.serve.transport import CoalescingTransport, write_whole
from augury.serve.wire import send_response

from .helpers import add_model, live


class Recorder:
    """The real transport's side: what was written, in how many calls."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return f"info:{name}"


def test_writes_of_one_loop_turn_leave_as_one() -> None:
    async def scenario() -> tuple[Recorder, list[list[bytes]]]:
        real = Recorder()
        t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        seen = []
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.writelines([b"ab", bytearray(b"cd"), memoryview(b"ef")])
        assert real.writes == [] and t.get_write_buffer_size() == 25
        await asyncio.sleep(0)
        seen.append(list(real.writes))
        t.write(b"next")
        t.close()  # flushes before closing
        seen.append(list(real.writes))
        assert t.get_extra_info("peername") == "info:peername"
        t.write(b"late")
        t.abort()  # drops what is pending
        await asyncio.sleep(0)
        return real, seen

    real, seen = asyncio.run(scenario())
    assert seen[0] == [b"HTTP/1.1 200 OK\r\n\r\nabcdef"]
    assert seen[1] == [b"HTTP/1.1 200 OK\r\n\r\nabcdef", b"next"]
    assert real.closed and real.aborted and real.writes[-1] == b"next"


def test_live_responses_are_whole_through_the_coalescing_protocol() -> None:
    with live(add_model()) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            body = b'{"instances": [{"a": 1, "b": 2}]}'
            request = (b"POST /v1/models/add:predict HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            for _ in range(3):  # one connection, several requests
                s.sendall(request)
                first = s.recv(65536)  # headers and body, written together
                assert first.startswith(b"HTTP/1.1 200 OK") and first.endswith(b"}"), first
                assert b'"value":3' in first
        with httpx.Client() as c:  # a large answer (many instances) is whole too
            r = c.post(f"{base}/v1/models/add:predict",
                       json={"instances": [{"a": i, "b": 1} for i in range(3000)]})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 3000


def _cycle(transport: Any, method: str = "GET", keep_alive: bool = True) -> Any:
    """A real uvicorn request cycle writing to `transport`, with the response side as uvicorn sets it up."""
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    completed: list[bool] = []
    cycle = RequestResponseCycle(
        scope={"type": "http", "method": method}, transport=transport, flow=FlowControl(transport),
        logger=logging.getLogger("test"), access_logger=logging.getLogger("test.access"), access_log=False,
        default_headers=[(b"date", b"Wed, 25 Nov 2026 17:49:51 GMT"), (b"Server", b"uvicorn")],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=keep_alive,
        on_response=lambda: completed.append(True))
    cycle.completed = completed
    return cycle


class Reading(Recorder):
    """A transport the flow control can pause and resume."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


HEADERS = [(b"x-augury-source", b"static=1,dynamic=0"), (b"x-request-id", b"abc")]


def test_a_whole_response_is_the_bytes_and_state_uvicorn_itself_makes() -> None:
    async def scenario() -> tuple[Any, Any, Reading, Reading]:
        loop = asyncio.get_running_loop()
        fast_out, asgi_out = Reading(), Reading()
        fast = _cycle(CoalescingTransport(fast_out, loop))  # type: ignore[arg-type]
        asgi = _cycle(CoalescingTransport(asgi_out, loop))  # type: ignore[arg-type]
        assert write_whole(fast.send, 200, list(HEADERS), b"application/json", b'{"a":1}')
        await send_response(asgi.send, 200, b'{"a":1}', list(HEADERS))
        await asyncio.sleep(0)
        return fast, asgi, fast_out, asgi_out

    fast, asgi, fast_out, asgi_out = asyncio.run(scenario())
    assert fast_out.writes == asgi_out.writes and len(fast_out.writes) == 1
    head = b"HTTP/1.1 200 OK\r\ndate: Wed, 25 Nov 2026 17:49:51 GMT\r\nserver: uvicorn\r\n"
    assert fast_out.writes[0].startswith(head)
    for field in ("response_started", "response_complete", "waiting_for_100_continue", "keep_alive",
                  "expected_content_length"):
        assert getattr(fast, field) == getattr(asgi, field), field
    assert fast.message_event.is_set() and fast.completed == asgi.completed == [True]


def test_anything_but_the_plain_case_is_left_to_the_asgi_messages() -> None:
    async def declined() -> list[bool]:
        loop = asyncio.get_running_loop()

        async def plain_send(message: Any) -> None: ...

        paused = _cycle(CoalescingTransport(Reading(), loop))  # type: ignore[arg-type]
        paused.flow.write_paused = True
        started = _cycle(CoalescingTransport(Reading(), loop))  # type: ignore[arg-type]
        started.response_started = True
        return [
            write_whole(plain_send, 200, [], b"text/plain", b""),  # not uvicorn's
            write_whole(_cycle(Reading()).send, 200, [], b"text/plain", b""),  # not the coalescing protocol
            write_whole(_cycle(CoalescingTransport(Reading(), loop), keep_alive=False).send,  # type: ignore[arg-type]
                        200, [], b"text/plain", b""),  # closes after the response
            write_whole(_cycle(CoalescingTransport(Reading(), loop), method="HEAD").send,  # type: ignore[arg-type]
                        200, [], b"text/plain", b""),
            write_whole(paused.send, 200, [], b"text/plain", b""),
            write_whole(started.send, 200, [], b"text/plain", b""),
            write_whole(_cycle(CoalescingTransport(Reading(), loop)).send,  # type: ignore[arg-type]
                        600, [], b"text/plain", b""),  # a status uvicorn has no line for
        ]

    assert asyncio.run(declined()) == [False] * 7


def test_pipelined_requests_and_odd_versions_through_the_whole_response_path(monkeypatch: Any) -> None:
    """Two requests in one packet are answered in order; a model version with a line break and a
    non-ASCII letter reaches the header percent-encoded, and the body as it is."""
    written: list[bool] = []

    def counted(*args: Any) -> bool:
        written.append(write_whole(*args))
        return written[-1]

    monkeypatch.setattr(hot, "write_whole", counted)
    with live(add_model(version="v1\r\nx-evil: 1 é")) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            one = b'{"instances": [{"a": 1, "b": 2}]}'
            two = b'{"instances": [{"a": 5, "b": 5}]}'
            request = (b"POST /v1/models/add:predict HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s")
            s.sendall(request % (len(one), one) + request % (len(two), two))
            got = b""
            while got.count(b"HTTP/1.1 200 OK") < 2 or not got.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
        first, second = got.split(b"HTTP/1.1 200 OK")[1:]
        assert b'"value":3' in first and b'"value":10' in second
        assert b"x-augury-model-version: v1%0D%0Ax-evil: 1 %C3%A9\r\n" in first
        assert b"\r\nx-evil" not in got
        with httpx.Client() as c:
            r = c.post(f"{base}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 2}]})
            assert r.json()["provenance"][0]["model_version"] == "v1\r\nx-evil: 1 é"
    assert written == [True, True, True]
