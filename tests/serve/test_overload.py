"""Shedding past --max-in-flight, against a real server: a refused request gets a 503 with Retry-After
and ``{"error": ...}`` and never reaches the model; probes and /metrics are answered while it is full;
and the pure request recogniser the protocol's fast refusal relies on (`admission.plain_request`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import uvicorn

from augury.errors import ConfigError
from augury.models import Model, function_model
from augury.monitor import ServeMetrics
from augury.serve import ServeSettings, create_app
from augury.serve.admission import Admission, plain_request, remembered_plain_request
from augury.serve.middleware import RequestIds
from augury.serve.protocol import AuguryHttpProtocol
from augury.serve.run import http_protocol
from augury.serve.settings import LaunchConfig

from .helpers import live, until

PREDICT = "/v1/models/gate:predict"
Plain = tuple[bytes, bytes, list[tuple[bytes, bytes]]]
Full = tuple[str, "Gate", list[concurrent.futures.Future[httpx.Response]]]


class Gate:
    """A model (value = a + b) that records every `a` it scores and, for a > 0, waits until `open()`:
    requests scored by it stay in flight for as long as a test needs them there."""

    def __init__(self) -> None:
        self.seen: list[float] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        gate = self

        @function_model(inputs={"a": "float64", "b": "float64"}, outputs={"value": "float64"}, version="1",
                        task="regression")
        def model(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            gate.seen.extend(batch["a"].tolist())
            if (batch["a"] > 0).any():  # the warm-up row of zeros passes
                gate.entered.set()
                assert gate._open.wait(30), "the test never let the model go on"
            return {"value": batch["a"] + batch["b"]}

        self.model: Model = model.to_model(name="gate")

    def open(self) -> None:
        self._open.set()


@pytest.fixture
def full() -> Iterator[Full]:
    """A server with --max-in-flight 2 whose two places are taken by requests the model holds."""
    gate = Gate()
    with live(gate.model, max_in_flight=2, max_batch_size=1, max_delay_ms=0) as base, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            held = [pool.submit(httpx.post, base + PREDICT, json={"instances": [{"a": a, "b": 0}]},
                                timeout=30) for a in (1, 2)]
            assert gate.entered.wait(10)
            # both places taken (the scrape itself is the third request in flight)
            until(lambda: "augury_requests_in_flight 3.0" in httpx.get(base + "/metrics").text)
            yield base, gate, held
        finally:
            gate.open()


def _raw(base: str, data: bytes, reads: int = 1) -> tuple[bytes, bool]:
    """Send `data` on a new connection; the bytes of `reads` responses and whether the server closed."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        got = b""
        while got.count(b"HTTP/1.1 ") < reads or not _complete(got, reads):
            chunk = sock.recv(65536)
            if not chunk:
                return got, True
            got += chunk
        sock.settimeout(0.3)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        return got, closed


def _complete(raw: bytes, reads: int) -> bool:
    """Whether `raw` holds `reads` whole responses (each framed by its content-length)."""
    at = 0
    for _ in range(reads):
        end = raw.find(b"\r\n\r\n", at)
        if end < 0:
            return False
        head = raw[at:end].lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        at = end + 4 + length
        if len(raw) < at:
            return False
    return True


def _body(n: int) -> bytes:
    return json.dumps({"instances": [{"a": 100 + n, "b": 0}]}).encode()


def _post(body: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    head = b"POST " + PREDICT.encode() + b" " + version + b"\r\nhost: x\r\ncontent-type: application/json\r\n"
    return head + extra + b"content-length: %d\r\n\r\n" % len(body) + body


def _check_refusal(raw: bytes) -> dict[str, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable", lines[0]
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert headers["retry-after"] == "1" and headers["content-type"] == "application/json"
    error = json.loads(body[:int(headers["content-length"])])["error"]
    assert "--max-in-flight" in error and "retry later" in error
    return headers


def test_refused_requests_get_503_json_with_retry_after_and_never_reach_the_model(full: Full) -> None:
    base, gate, held = full
    # plain requests, two on one keep-alive connection: refused without the parser, the connection kept
    raw, closed = _raw(base, _post(_body(1), b"x-request-id: mine-1\r\n"), reads=1)
    assert _check_refusal(raw)["x-request-id"] == "mine-1" and not closed
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for n in (2, 3):
            sock.sendall(_post(_body(n)))
            got = b""
            while not _complete(got, 1):
                got += sock.recv(65536)
            assert len(_check_refusal(got)["x-request-id"]) == 32  # one of the server's own
    # through the parser: "Connection: close", HTTP/1.0, a query string, a body in two pieces
    raw, closed = _raw(base, _post(_body(4), b"connection: close\r\n"))
    assert _check_refusal(raw)["connection"] == "close" and closed
    raw, closed = _raw(base, _post(_body(5), version=b"HTTP/1.0"))
    _check_refusal(raw)
    assert closed
    raw, closed = _raw(base, _post(_body(6)).replace(b":predict ", b":predict?x=1 "))
    _check_refusal(raw)
    # a chunked body: refused at its head, the connection closed (its body is not read)
    chunked = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
               + b"%x\r\n" % len(_body(7)) + _body(7) + b"\r\n0\r\n\r\n")
    raw, closed = _raw(base, chunked)
    assert _check_refusal(raw)["connection"] == "close" and closed
    # httpx, as a client would
    r = httpx.post(base + PREDICT, json={"instances": [{"a": 108, "b": 0}]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "--max-in-flight" in r.json()["error"]
    metrics = httpx.get(base + "/metrics").text
    gate.open()
    assert [f.result().status_code for f in held] == [200, 200]
    assert not [a for a in gate.seen if a >= 100], gate.seen  # no refused request reached the model
    assert "augury_shed_requests_total 8.0" in metrics
    errors = 'augury_request_errors_total{error="TooManyInFlight",route="unmatched",status="503"}'
    assert f"{errors} 8.0" in metrics
    after = httpx.post(base + PREDICT, json={"instances": [{"a": 3, "b": 4}]})  # the places are free again
    assert after.status_code == 200 and after.json()["predictions"][0]["value"] == 7


def test_probes_and_metrics_are_answered_while_the_server_is_full(full: Full) -> None:
    base, gate, held = full
    for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
        assert httpx.get(base + path).status_code == 200, path
        raw, _ = _raw(base, b"GET " + path.encode() + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 "), (path, raw[:100])
    assert httpx.post(base + PREDICT, json={"instances": [{"a": 101, "b": 0}]}).status_code == 503
    gate.open()
    assert [f.result().status_code for f in held] == [200, 200]


def test_refusals_are_answered_while_the_model_is_stuck() -> None:
    gate = Gate()
    with live(gate.model, max_in_flight=1, max_batch_size=1) as base, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            held = pool.submit(httpx.post, base + PREDICT, json={"instances": [{"a": 1, "b": 0}]}, timeout=30)
            assert gate.entered.wait(10)
            until(lambda: "augury_requests_in_flight 2.0" in httpx.get(base + "/metrics").text)
            started = time.monotonic()
            with httpx.Client() as client:  # one keep-alive connection, many refusals
                statuses = [client.post(base + PREDICT, json={"instances": [{"a": 200 + i, "b": 0}]})
                            .status_code for i in range(200)]
            assert statuses == [503] * 200 and time.monotonic() - started < 10
        finally:
            gate.open()
        assert held.result().status_code == 200
    assert not [a for a in gate.seen if a >= 100]


@pytest.fixture
def probe_port() -> Iterator[tuple[str, str, Gate]]:
    """A server on two sockets, as ``augury serve --probe-port`` runs it: (serving URL, probe URL, the
    model's gate), with --max-in-flight 1."""
    gate = Gate()
    sockets = []
    for _ in range(2):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    serving, probes = (sock.getsockname()[1] for sock in sockets)
    app = create_app(ServeSettings(max_in_flight=1, max_batch_size=1), gate.model, None)
    protocol = http_protocol(ServeSettings(), probe_port=probes)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on", ws="none", http=protocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": sockets}, daemon=True)
    thread.start()
    try:
        until(lambda: server.started)
        yield f"http://127.0.0.1:{serving}", f"http://127.0.0.1:{probes}", gate
    finally:
        gate.open()
        server.should_exit = True
        thread.join(15)
        AuguryHttpProtocol.configure(header_timeout=AuguryHttpProtocol.header_timeout,
                                     body_timeout=AuguryHttpProtocol.body_timeout)
        for sock in sockets:
            sock.close()


def test_the_probe_port_answers_probes_and_metrics_while_the_serving_port_is_full(
        probe_port: tuple[str, str, Gate]) -> None:
    base, probes, gate = probe_port
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.post, base + PREDICT, json={"instances": [{"a": 1, "b": 0}]}, timeout=30)
        assert gate.entered.wait(10)
        assert httpx.post(base + PREDICT, json={"instances": [{"a": 101, "b": 0}]}).status_code == 503
        with httpx.Client() as client:  # one keep-alive connection to the probe port, as a scraper keeps
            for path in ("/v2/health/live", "/v2/health/ready", "/metrics", "/v2/health/live?x=1"):
                assert client.get(probes + path).status_code == 200, path
        assert 'augury_requests_in_flight 2.0' in httpx.get(probes + "/metrics").text  # the same server
        raw, closed = _raw(probes, b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200 ") and not closed
        # anything else on the probe port: 404 with {"error"}, closed, its body never read
        for request in (_post(_body(102)), b"GET /v2/models/gate HTTP/1.1\r\nhost: x\r\n\r\n",
                        b"GET http://x/metrics HTTP/1.1\r\nhost: x\r\n\r\n"):
            raw, closed = _raw(probes, request)
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404 ") and closed, raw
            assert "only /v2/health/" in json.loads(body)["error"]
        gate.open()
        assert held.result().status_code == 200
    assert not [a for a in gate.seen if a >= 100]  # nothing sent to the probe port reached the model
    # the serving port serves the probe paths too, as without a probe port
    assert httpx.get(base + "/v2/health/ready").status_code == 200
    after = httpx.post(base + PREDICT, json={"instances": [{"a": 3, "b": 4}]})
    assert after.json()["predictions"][0]["value"] == 7


@pytest.mark.parametrize("probe", [0, 8000, 65536])
def test_a_probe_port_must_be_another_port(probe: int) -> None:
    with pytest.raises(ConfigError, match="probe port must be between 1 and 65535 and not the serving port"):
        LaunchConfig(model_ref="m.joblib", port=8000, probe_port=probe)


BODY = b'{"instances": [{"a": 1}]}'


@pytest.mark.parametrize(("data", "expected"), [
    (b"POST /v1/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n" + BODY,
     (b"POST", b"/v1/m:predict", [])),
    (b"GET /metrics?x=1 HTTP/1.1\r\nhost: x\r\nX-Request-Id: abc \r\n\r\n",
     (b"GET", b"/metrics", [(b"x-request-id", b"abc")])),
    (b"GET / HTTP/1.1\r\n\r\n", (b"GET", b"/", [])),
])
def test_plain_request_recognises_one_whole_plain_request(data: bytes, expected: Plain) -> None:
    assert plain_request(data) == expected


@pytest.mark.parametrize("data", [
    b"POST /p HTTP/1.1\r\nContent-Length: 25\r\n\r\n" + BODY[:-1],  # body not all here
    b"POST /p HTTP/1.1\r\nContent-Length: 25\r\n\r\n" + BODY + b"GET / HTTP/1.1\r\n\r\n",  # two requests
    b"POST /p HTTP/1.1\r\nContent-Length: 25\r\n",  # head not all here
    b"POST /p HTTP/1.0\r\nContent-Length: 25\r\n\r\n" + BODY,  # another version
    b"POST http://x/p HTTP/1.1\r\nContent-Length: 25\r\n\r\n" + BODY,  # absolute form
    b"post /p HTTP/1.1\r\nContent-Length: 25\r\n\r\n" + BODY,  # not a method token as sent
    b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 25\r\n\r\n",
    b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /p HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 25\r\nContent-Length: 25\r\n\r\n" + BODY,  # twice
    b"POST /p HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 1e2\r\n\r\n",
    b"GET  /p HTTP/1.1\r\n\r\n",
])
def test_plain_request_leaves_anything_else_to_the_parser(data: bytes) -> None:
    assert plain_request(data) is None


def test_the_protocol_remembers_plain_heads_and_answers_as_plain_request_does() -> None:
    """`admission.remembered_plain_request` (plain_request remembered by head) gives plain_request's
    answer, the second time from memory, and never for a request whose length does not fit its remembered
    head."""
    whole = b"POST /v1/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 25\r\n\r\n" + BODY
    with_id = b"GET /p HTTP/1.1\r\nX-Request-Id: a\r\n\r\n"
    for data in (whole, whole, whole[:-1], whole + b"G", whole[:-1] + b"}", b"GET /p HTTP/1.1\r\n",
                 with_id, with_id):
        assert remembered_plain_request(data) == plain_request(data), data
    assert remembered_plain_request(whole) == (b"POST", b"/v1/m:predict", [])


async def _refuse_for(gate: Admission, seconds: float) -> None:
    """Refusals every 10 ms for `seconds` (one per loop turn)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        gate.refusal(b"POST", [], False)
        await asyncio.sleep(0.01)


async def _limits_until(gate: Admission, limit: int, seconds: float) -> list[int]:
    """The limits seen, in turn, polling every 5 ms until `limit` is in force or `seconds` have passed."""
    seen = [gate.limit]
    started = time.monotonic()
    while gate.limit != limit and time.monotonic() - started < seconds:
        await asyncio.sleep(0.005)
        if gate.limit != seen[-1]:
            seen.append(gate.limit)
    return seen


def test_lasting_overload_lowers_the_limit_and_it_comes_back_in_steps_once_nothing_is_refused() -> None:
    """`Admission` lowers its limit once refusals have gone on for `sustained_s`, from the refusal path
    alone (requests under the limit pay nothing); after `hold_s` it stays low while refusals go on, then
    doubles once `step_s` has passed without a refusal, step by step up to the full limit; refusals that
    last at a raised step lower it again. A short burst of refusals changes nothing."""

    async def main() -> None:
        gate = Admission(8, ServeMetrics(), RequestIds(), overload_limit=2, sustained_s=0.1, gap_s=0.05,
                         hold_s=0.2, step_s=0.15)
        assert gate.steps() == [2, 4, 8]
        for _ in range(3):  # a burst: refusals in 3 turns, 30 ms
            gate.refusal(b"POST", [], False)
            await asyncio.sleep(0.01)
        assert gate.limit == 8
        await asyncio.sleep(0.1)  # a pause longer than gap_s ends that run of refusals
        await _refuse_for(gate, 0.2)  # lasting
        assert gate.limit == 2
        said = gate.refusal(b"POST", [], False)  # the refusal names the limit in force, and the full one
        assert b"handling 2 requests already (--max-in-flight 8, lowered while overload lasts)" in said
        assert [gate.admit() for _ in range(3)] == [True, True, False]
        gate.done()
        gate.done()
        await _refuse_for(gate, 0.45)  # the overload goes on past the hold: the limit stays low
        assert gate.limit == 2
        quiet = time.monotonic()
        assert await _limits_until(gate, 8, 3.0) == [2, 4, 8]  # no refusal: doubled, one step at a time
        assert time.monotonic() - quiet >= 0.25  # step_s unrefused before each step
        assert b"handling 8 requests already (--max-in-flight);" in gate.refusal(b"POST", [], False)
        await asyncio.sleep(0.2)  # that one refusal is not lasting overload
        assert gate.limit == 8
        await _refuse_for(gate, 0.2)  # lasting again: lowered again, for a new hold, then steps
        assert gate.limit == 2
        assert await _limits_until(gate, 4, 2.0) == [2, 4]
        said = gate.refusal(b"POST", [], False)  # a raised step's refusal names its own limit
        assert b"handling 4 requests already (--max-in-flight 8, lowered while overload lasts)" in said
        await _refuse_for(gate, 0.2)  # lasting at the raised step: lowered to the overload limit
        assert gate.limit == 2

    asyncio.run(main())


def test_one_loop_turn_refusing_more_than_the_limit_lowers_it_at_once() -> None:
    async def main() -> int:
        gate = Admission(8, ServeMetrics(), RequestIds(), overload_limit=2)
        for _ in range(9):  # one turn
            gate.refusal(b"POST", [], False)
        await asyncio.sleep(0.01)
        return gate.limit

    assert asyncio.run(main()) == 2
