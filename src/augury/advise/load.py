"""The calibration's load on a real ``augury serve``: a small HTTP/1.1 client over asyncio, and the phases
`augury.advise.calibrate` measures with it.

After a closed-loop warm-up (`CONCURRENCY` clients, `WARMUP_S`), each phase counts the server's CPU time
(the kernel's accounting of its process) and, from its /metrics, the model's time and the rows per model
call:

- the median round trip of ``GET /v2/health/ready``, one at a time on one connection (`ROUND_TRIPS`);
- one-row predicts arriving as a Poisson stream (open loop, as real traffic arrives) for `phase_s` at a
  light rate (`LIGHT_RATE`: about one row per model call) and at a heavy one (`HEAVY_BUSY` of what the
  light phase's CPU per request allows: batches start to form; slower again if the server sheds);
- `FULL_CONCURRENCY` closed-loop clients (full batches) for half of `phase_s`.

The client is plain asyncio on raw streams (no HTTP library): what it measures is the server's CPU, which a
busy client changes little.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from augury.advise.timed_conn import TimedConn
from augury.errors import AuguryError

#: closed-loop connections of the warm-up.
CONCURRENCY = 16
#: closed-loop clients of the full-batch phase: enough that batches hold tens of rows, so that what is
#: left per request there is nearly all per-request work.
FULL_CONCURRENCY = 64
#: seconds per measured phase; the light phase's rate (req/s); the heavy phase's rate, as a share of what
#: the light phase's CPU per request allows, and its cap.
PHASE_S = 2.5
LIGHT_RATE = 400.0
HEAVY_BUSY = 0.8
MAX_RATE = 6000.0
#: the warm-up's length and the round trips timed, for phases of `PHASE_S`; shorter phases (the tests'
#: `phase_s`) shorten both in proportion, down to `MIN_ROUND_TRIPS`.
WARMUP_S = 0.7
ROUND_TRIPS = 300
MIN_ROUND_TRIPS = 60


class CalibrationError(AuguryError):
    """The calibration server could not be started or did not answer as expected."""


class CpuTimed(Protocol):
    """A process whose CPU time can be read (a ``psutil.Process``)."""

    def cpu_times(self) -> object: ...


@dataclass(frozen=True)
class Phase:
    """One phase: requests answered, server CPU and model seconds, model calls, and the wall time over
    which the CPU time was counted."""

    requests: int
    cpu_s: float
    model_s: float
    calls: float
    wall_s: float = 0.0

    @property
    def busy(self) -> float:
        """The share of the time the server's core was busy (its CPU time over the wall time)."""
        return min(self.cpu_s / self.wall_s, 1.0) if self.wall_s > 0 else 1.0

    @property
    def rows_per_call(self) -> float:
        return self.requests / self.calls if self.calls else 1.0

    @property
    def rest_s(self) -> float:
        """Server CPU per request beyond the model's time."""
        return max(self.cpu_s - self.model_s, 0.0) / max(self.requests, 1)


@dataclass(frozen=True)
class Measured:
    """What `phases` measured: the trivial round trip, the (light, heavy, full) phases, and the open-loop
    phases' timed requests (light, heavy)."""

    round_trip_s: float
    phases: tuple[Phase, Phase, Phase]
    timed: tuple[Timed, Timed]


class Conn:
    """One keep-alive HTTP/1.1 connection: send a request, read a Content-Length response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def call(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    """One HTTP/1.1 request to 127.0.0.1 (a JSON body when given)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def one(port: int, request: bytes) -> int:
    """Send `request` on a new connection; the status (5 s at most)."""
    conn = await Conn.open(port)
    try:
        return await asyncio.wait_for(conn.call(request), 5.0)
    finally:
        conn.close()


async def phases(port: int, server: CpuTimed, phase_s: float, predict: bytes) -> Measured:
    """The warm-up, the round trips and the three phases, `predict` (a one-row predict request) as the
    load."""
    scale = min(phase_s / PHASE_S, 1.0)
    await closed_loop(port, CONCURRENCY, WARMUP_S * scale, server, predict)
    trips = sorted(await sequential(port, request_bytes("GET", "/v2/health/ready"),
                                    max(int(ROUND_TRIPS * scale), MIN_ROUND_TRIPS)))
    light, light_timed, heavy, heavy_timed = await light_then_heavy(port, server, LIGHT_RATE, phase_s,
                                                                    predict)
    full = await closed_loop(port, FULL_CONCURRENCY, phase_s / 2, server, predict)
    return Measured(trips[len(trips) // 2], (light, heavy, full), (light_timed, heavy_timed))


async def light_then_heavy(port: int, server: CpuTimed, light_rate: float, phase_s: float,
                           predict: bytes | Sequence[bytes],
                           tries: int = 3) -> tuple[Phase, Timed, Phase, Timed]:
    """The two timed open-loop phases: `light_rate`, then `HEAVY_BUSY` of what the light phase's CPU per
    request allows, tried again at 0.6 of the rate (up to `tries` in all) while the server sheds."""
    light, light_timed, refused = await open_loop(port, light_rate, phase_s, server, predict)
    if refused:
        raise CalibrationError(f"{refused} of {light.requests + refused} predicts at {light_rate:g} req/s "
                               f"did not answer 200: is the machine very busy?")
    rate = min(HEAVY_BUSY * light.requests / max(light.cpu_s, 1e-9), MAX_RATE)
    for _ in range(tries):  # a busy machine serves less than the light phase promised: shed, then slower
        heavy, heavy_timed, refused = await open_loop(port, rate, phase_s, server, predict)
        if refused <= 0.01 * (heavy.requests + refused):
            break
        rate *= 0.6
    return light, light_timed, heavy, heavy_timed


async def sequential(port: int, request: bytes, n: int) -> list[float]:
    """Round trips of `n` requests one after another on one keep-alive connection."""
    conn = await Conn.open(port)
    out = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            await conn.call(request)
            out.append(time.perf_counter() - t)
    finally:
        conn.close()
    return out


@dataclass(frozen=True)
class Timed:
    """An open-loop phase's answered requests: when each was sent and when its answer arrived (seconds,
    wall clock; the answer's time the kernel's when `stamped`)."""

    sent_s: tuple[float, ...]
    received_s: tuple[float, ...]
    stamped: bool


def bodies(predict: bytes | Sequence[bytes]) -> Iterator[bytes]:
    """`predict` again and again, or each of several predicts in turn (rows of the user's data)."""
    return itertools.repeat(predict) if isinstance(predict, bytes) else itertools.cycle(predict)


async def open_loop(port: int, rate: float, seconds: float, server: CpuTimed,
                    predict: bytes | Sequence[bytes]) -> tuple[Phase, Timed, int]:
    """One-row predicts arriving as a Poisson stream at `rate` for `seconds` (open loop: each is sent at
    its time, on an idle connection of a pool that grows as needed): the phase, the answered requests'
    times (`Timed`), and how many were not answered 200 (shed). Arrivals as real traffic makes
    them: a server woken for each request costs more CPU per request than one kept busy by a closed
    loop (measured on 16 cores: 364 against 267 us per one-row predict of a 100-tree model). Several
    predicts are sent in turn."""
    rng = random.Random(7)
    each = bodies(predict)
    idle: list[TimedConn] = [await TimedConn.open(port) for _ in range(8)]
    opened = list(idle)
    sent: list[float] = []
    received: list[float] = []
    failures = 0

    async def fire() -> None:
        nonlocal failures
        conn = idle.pop() if idle else await TimedConn.open(port)
        if conn not in opened:
            opened.append(conn)
        status, t0, t1 = await conn.call(next(each))
        if status == 200:
            sent.append(t0)
            received.append(t1)
        else:
            failures += 1
        idle.append(conn)

    before, cpu0, wall0 = await metrics(port), cpu_s(server), time.perf_counter()
    # no collections in this client meanwhile: a full one (thousands of live tasks) holds it for
    # milliseconds, and late sends would make the server look busier in bursts
    gc.collect()
    gc.disable()
    tasks = []
    start = time.perf_counter() + 0.005
    due = start
    while True:
        due += rng.expovariate(rate)
        if due - start > seconds:
            break
        ahead = due - time.perf_counter()
        if ahead > 0.002:
            await asyncio.sleep(ahead - 0.001)
        while time.perf_counter() < due:
            await asyncio.sleep(0)
        tasks.append(asyncio.ensure_future(fire()))
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 30.0)
    finally:
        gc.enable()
        for c in opened:
            c.close()
    cpu1, wall1, after = cpu_s(server), time.perf_counter(), await metrics(port)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    phase = Phase(len(sent), cpu1 - cpu0, delta("augury_model_inference_seconds_sum"),
                  delta("augury_batch_rows_count"), wall1 - wall0)
    return phase, Timed(tuple(sent), tuple(received), all(c.stamped for c in opened)), failures


async def closed_loop(port: int, connections: int, seconds: float, server: CpuTimed,
                      predict: bytes | Sequence[bytes]) -> Phase:
    """`connections` clients each sending one predict after another for `seconds` (several in turn)."""
    each = bodies(predict)
    conns = [await Conn.open(port) for _ in range(connections)]
    before, cpu0 = await metrics(port), cpu_s(server)
    done = 0
    stop = time.monotonic() + seconds

    async def run(conn: Conn) -> None:
        nonlocal done
        while time.monotonic() < stop:
            if await conn.call(next(each)) != 200:
                raise CalibrationError("a calibration predict did not answer 200")
            done += 1

    try:
        await asyncio.gather(*(run(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    cpu1, after = cpu_s(server), await metrics(port)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    return Phase(done, cpu1 - cpu0, delta("augury_model_inference_seconds_sum"),
                 delta("augury_batch_rows_count"), 0.0)  # always busy: no wake-ups


def cpu_s(server: CpuTimed) -> float:
    """The server's CPU seconds so far, user and system."""
    times = server.cpu_times()
    return float(times.user + times.system)  # type: ignore[attr-defined]


async def metrics(port: int) -> dict[str, float]:
    """The server's /metrics samples (`metric_values`)."""
    conn = await Conn.open(port)
    try:
        conn.writer.write(request_bytes("GET", "/metrics"))
        head = await conn.reader.readuntil(b"\r\n\r\n")
        length = next((int(v) for n, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
                       if n.strip().lower() == b"content-length"), None)
        raw = await (conn.reader.readexactly(length) if length is not None else conn.reader.read())
    finally:
        conn.close()
    return metric_values(raw)


def metric_values(text: bytes) -> dict[str, float]:
    """A Prometheus text exposition as sample (name with its labels) -> value; comments and lines
    without a number are left out."""
    out: dict[str, float] = {}
    for line in text.decode(errors="replace").splitlines():
        name, _, value = line.rpartition(" ")
        if name and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out
