"""One write per response: the coalescing transport joins the writes of one loop turn, loses nothing."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx

from augury.serve.transport import CoalescingTransport

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
