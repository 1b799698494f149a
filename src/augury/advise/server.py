"""A real ``augury serve`` in a subprocess, as calibration and the model's own server measure it.

One worker on a free 127.0.0.1 port, its native thread pools capped at one thread (as ``augury serve
--model-threads 1``, the default), in its own session (whatever it signals on the way down, never this
process), started with `started` and stopped on the way out. `pinned` puts every thread of an answering
server on one core, and `client_cores` this process on the others meanwhile: with two or more cores the
server's core is its own, as one worker's is in production, and the client's work is not timed as the
server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from augury.advise import load
from augury.advise.load import CalibrationError

#: seconds a server has to answer a predict after it was started.
START_TIMEOUT_S = 60.0
#: the native thread pools' caps, as the server's model thread has them.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Served:
    """A started server: its process, port, log file, and the one-row predict it is checked with."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    predict: bytes


def cores() -> tuple[int | None, list[int]]:
    """(the server's core, the client's cores) from this process's CPUs: the first for the server and the
    rest for the client with two or more, else (None, []): nothing pinned."""
    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (mine[0], mine[1:]) if len(mine) >= 2 else (None, [])


@contextlib.contextmanager
def started(model: str, name: str, folder: Path, predict: bytes, args: Sequence[str] = (),
            python_path: Sequence[str] = ()) -> Iterator[Served]:
    """``augury serve --model MODEL --name NAME`` started (not yet answering: `wait_ready`) in `folder`,
    with `python_path` ahead of PYTHONPATH; stopped on the way out."""
    port = _free_port()
    cmd = [sys.executable, "-m", "augury.cli", "serve", "--model", model, "--name", name, "--host",
           "127.0.0.1", "--port", str(port), "--workers", "1", "--max-batch-size", "64", *args]
    env = {**os.environ, **THREAD_ENV,
           "PYTHONPATH": os.pathsep.join([*python_path, os.environ.get("PYTHONPATH", "")])}
    log = folder / f"serve-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=folder, start_new_session=True)
    try:
        yield Served(proc, port, log, predict)
    finally:
        stop(proc)


def wait_ready(server: Served, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the server answers its predict 200; CalibrationError if it exits, answers otherwise, or is
    not answering after `timeout_s`."""
    started_at = time.monotonic()
    last = "no answer"
    while time.monotonic() - started_at < timeout_s:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-800:].strip()
            raise CalibrationError(f"augury serve exited with {server.proc.returncode}: {tail}")
        try:
            status = asyncio.run(load.one(server.port, server.predict))
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            status = 0
        if status == 200:
            return
        if status:
            last = f"HTTP {status}"
        time.sleep(0.2)
    raise CalibrationError(f"augury serve did not answer a predict on 127.0.0.1:{server.port} within "
                           f"{timeout_s:.3g} s ({last})")


def pinned(server: Served, core: int | None) -> load.CpuTimed:
    """Put every thread of the (answering) server on `core` (None: leave it); its ``psutil.Process``.
    Threads started already (the model thread) keep their own mask, so each is moved."""
    import psutil

    try:
        process = psutil.Process(server.proc.pid)
        threads = process.threads()
    except psutil.Error as exc:
        raise CalibrationError(f"augury serve (pid {server.proc.pid}) is gone: {exc}") from exc
    if core is not None:
        for thread in threads:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, {core})
    cpu: load.CpuTimed = process
    return cpu


@contextlib.contextmanager
def client_cores(cores: list[int]) -> Iterator[None]:
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


def stop(proc: subprocess.Popen[bytes]) -> None:
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
