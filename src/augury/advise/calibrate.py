"""``augury advise --calibrate``: measure the server's own cost on this machine, with a real ``augury serve``.

A tiny `module:function` model (four float features, one sum: a few microseconds a call) is served by
``augury serve`` in a subprocess on a free 127.0.0.1 port, one worker, its native thread pools capped at
one thread and, with two or more cores, pinned to one core while this process's client runs on the
others. It is served twice: with the server's default `--inline-below-ms` (so the model, being fast, is
scored on the loop's thread) and with `--inline-below-ms 0` (every batch hops to the model thread, as a
model slower than the threshold does). Each time, after a warm-up, the load of `augury.advise.load`:

- `round_trip_s`: the median round trip of ``GET /v2/health/ready``, one at a time on one connection;
- one-row predicts arriving as a Poisson stream (open loop, as real traffic arrives), `PHASE_S` seconds
  at a light rate (`LIGHT_RATE`: about one row per model call) and at a heavy one (`HEAVY_BUSY` of what
  the light phase's CPU per request allows: batches start to form), then `FULL_CONCURRENCY` closed-loop
  clients (full batches): each phase's server CPU time per request (from the kernel's accounting of its
  process), the model's time per request and the rows per model call (from its /metrics), and the
  share of the time the server was busy. What is left of the CPU time after the model's is
  `per_request + per_batch / rows_per_call + per_wake * (1 - busy)`: the three phases give the three
  figures (`_fit`).

The open-loop phases also give the server's own **pauses** (`stalls.pauses_from`): each request's
send time and its answer's arrival, timed by the kernel (`load.TimedConn`), show the requests the
server took longer over than usual, and how the number of those a second grows with the rate says how
many come with each request. (The server's collector and its other work come with its requests, so they
are drawn per request, where the stalls below follow the clock.)

Before that, with both servers started and idle, `stalls.probe` measures for `STALL_PROBE_S` how often
and how long the server's core is taken from it by other work: the `stalls` the simulation lays over the
worker's time. (They replaced a spread taken from the light phase's latencies divided by their mean: on
a busy machine a few stalls made that mean 7 times the median, and the spread put predictions 40-640 %
off; issue 15.)

The figures are the server's CPU time, so a busy client or machine changes them little; they are saved
to a small JSON file (`overheads.default_path()`, or the path given) that later advice reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from augury.advise import load
from augury.advise.load import PHASE_S, CalibrationError, Measured, Phase, request_bytes
from augury.advise.overheads import ServingOverheads
from augury.advise.stalls import pauses_from, probe
from augury.errors import MissingExtraError

#: seconds of the stall probe (shortened like the warm-up with shorter phases, to at least 0.3 s).
STALL_PROBE_S = 3.0
START_TIMEOUT_S = 60.0
NAME = "calib"
_MODEL = '''
import numpy as np
from augury.models import function_model

@function_model(inputs={"a": "float64", "b": "float64", "c": "float64", "d": "float64"},
                outputs={"value": "float64"}, version="1", task="regression")
def score(batch):
    return {"value": batch["a"] + batch["b"] + batch["c"] + batch["d"]}
'''
_PREDICT = request_bytes("POST", f"/v1/models/{NAME}:predict",
                         b'{"instances": [{"a": 0.5, "b": -1.25, "c": 2.0, "d": 3.5}]}')


def calibrate(*, phase_s: float = PHASE_S) -> ServingOverheads:
    """Serve a tiny model with ``augury serve`` twice (inline and hopping) and fit the overheads."""
    try:
        import psutil  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError("augury advise --calibrate", "advise", "psutil") from exc
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_core = cores[0] if len(cores) >= 2 else None
    with tempfile.TemporaryDirectory(prefix="augury-calibrate-") as tmp:
        (Path(tmp) / "augury_calibration_model.py").write_text(_MODEL, encoding="utf-8")
        # both servers start at once (their start, mostly imports, is over a second each), then are
        # measured one after the other: the one waiting is idle meanwhile
        with _server(Path(tmp), None) as first, _server(Path(tmp), 0.0) as second, \
                _client_cores(cores[1:] if server_core is not None else []):
            for proc, port, log in (first, second):
                _wait_ready(proc, port, log)
            stalls = probe(max(STALL_PROBE_S * min(phase_s / PHASE_S, 1.0), 0.3), server_core)
            inline = _measure(first, server_core, phase_s)
            _stop(first[0])
            hop = _measure(second, server_core, phase_s)
    per_request, batch_inline, wake_inline = _fit(inline.phases)
    per_request_hop, batch_hop, wake_hop = _fit(hop.phases)
    details = {f"{path}_{name}_{what}": value
               for path, run in (("inline", inline), ("hop", hop))
               for name, phase in zip(("light", "heavy", "full"), run.phases, strict=True)
               for what, value in (("rest_us", phase.rest_s * 1e6), ("rows_per_call", phase.rows_per_call),
                                   ("busy", phase.busy))}
    details["per_request_hop_us"] = per_request_hop * 1e6
    pauses = {path: pauses_from([(t.sent_s, t.received_s, phase.busy)
                                 for t, phase in zip(run.timed, run.phases, strict=False)], stalls)
              for path, run in (("inline", inline), ("hop", hop))}
    details["timed_by_the_kernel"] = float(all(t.stamped for run in (inline, hop) for t in run.timed))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    return ServingOverheads(per_batch_inline_s=batch_inline, per_batch_hop_s=batch_hop,
                            per_request_s=per_request, round_trip_s=inline.round_trip_s,
                            per_wake_inline_s=wake_inline, per_wake_hop_s=wake_hop,
                            source=f"calibrated on this machine ({machine}) at {now}", calibrated=True,
                            measured_at=now, machine=machine, details=tuple(details.items()),
                            stalls=stalls, pauses_inline=pauses["inline"], pauses_hop=pauses["hop"])


def _fit(phases: tuple[Phase, ...]) -> tuple[float, float, float]:
    """(per_request, per_batch, per_wake) from `rest = per_request + per_batch / rows_per_call + per_wake
    * (1 - busy)` through the three phases. A request that finds the loop idle wakes it, which costs
    CPU that a loop kept busy does not pay; with Poisson arrivals a share (1 - busy) of requests find it
    idle (they see the time average), and a closed loop of 64 clients never does. Without the wake-up
    term, the per-batch cost fitted at a light rate (every batch a wake-up) was paid by every batch in
    the simulation, and the predicted server came out busier than the real one at higher rates (2-core
    VM, 3,200 req/s: 280 against 191 us of CPU per request). If the three phases do not give three
    non-negative figures (noise: the heavy phase is what tells wake-ups from batches), a negative
    per-batch cost is taken as none (2-core VM: light 194 us at 1.04 rows and 12 % busy, heavy 113 us
    at 1.18 rows and 47 % busy, full 47 us: the drop is wake-ups, not batching), and a negative
    wake-up cost is folded into the per-batch cost as before (`_fit_two`)."""
    import numpy as np

    light, heavy, full = phases[0], phases[1], phases[-1]
    a = np.array([[1.0, 1.0 / p.rows_per_call, 1.0 - p.busy if p.wall_s > 0 else 0.0]
                  for p in (light, heavy, full)])
    b = np.array([p.rest_s for p in (light, heavy, full)])
    try:
        r, c, w = (float(x) for x in np.linalg.solve(a, b))
    except np.linalg.LinAlgError:
        r = c = w = -1.0
    if min(r, c, w) >= 0 and np.linalg.cond(a) < 1e3:
        return r, c, w
    if c < 0 <= w:  # per-batch work below what noise tells apart: per request and per wake-up alone
        (r, w), *_ = np.linalg.lstsq(a[:, [0, 2]], b, rcond=None)
        if min(r, w) >= 0:
            return float(r), 0.0, float(w)
    return (*_fit_two(light, full), 0.0)


def _fit_two(light: Phase, full: Phase) -> tuple[float, float]:
    """(per_request, per_batch) from `rest = per_request + per_batch / rows_per_call` through the light
    phase (a batch per request, a wake-up per request) and the full-batch phase (tens of rows per call:
    its rest is nearly all per-request work). A least-squares line over the open-loop phases alone, which
    span few rows per call, crossed below 0 (2-core VM: 248 us at 1.18 rows, 97 us at 2.32: -60 us per
    request)."""
    x1, xn = 1.0 / light.rows_per_call, 1.0 / full.rows_per_call
    if x1 - xn < 0.1:  # the load did not batch: split the rest evenly
        return light.rest_s / 2, light.rest_s / 2
    per_batch = max((light.rest_s - full.rest_s) / (x1 - xn), 0.0)
    per_request = max(full.rest_s - per_batch * xn, 0.0)
    return per_request, per_batch


@contextlib.contextmanager
def _client_cores(cores: list[int]) -> Iterator[None]:
    """Run this process on `cores` (none: leave it) meanwhile, off the server's core."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cores))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


_Server = tuple[subprocess.Popen[bytes], int, Path]


@contextlib.contextmanager
def _server(folder: Path, inline_below_ms: float | None) -> Iterator[_Server]:
    """``augury serve`` of the calibration model started (not yet answering) on a free port; stopped
    on the way out."""
    port = _free_port()
    cmd = [sys.executable, "-m", "augury.cli", "serve", "--model", "augury_calibration_model:score",
           "--name", NAME, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--max-batch-size", "64"]
    if inline_below_ms is not None:
        cmd += ["--inline-below-ms", f"{inline_below_ms:g}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        # its own session: whatever it signals on the way down (its process group), never this process
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=folder, start_new_session=True)
    try:
        yield proc, port, log
    finally:
        _stop(proc)


def _measure(server: _Server, core: int | None, phase_s: float) -> Measured:
    """Pin `server` (answering) to `core`, and run the phases."""
    import psutil

    proc, port, _ = server
    process = psutil.Process(proc.pid)
    if core is not None:  # every thread: those started already (the model thread) keep their own mask
        for thread in process.threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, {core})
    return asyncio.run(load.phases(port, process, phase_s, _PREDICT))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL if it is not gone in 15 s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    started = time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise CalibrationError(f"augury serve exited with {proc.returncode} during calibration: {tail}")
        with contextlib.suppress(OSError):
            if asyncio.run(load.one(port, _PREDICT)) == 200:
                return
        time.sleep(0.2)
    raise CalibrationError(f"augury serve did not answer on 127.0.0.1:{port} within {START_TIMEOUT_S:g} s")
