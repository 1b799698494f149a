"""Server processes: start one, check its answers, sample its CPU and memory, stop it.

Every system is ONE server process on 127.0.0.1 (a free port), started in its own session with
OMP/OPENBLAS/MKL threads = 1 and its output in <work>/logs/<system>_r<round>.log; it is ready when its
first check request answers 200, and then every check request of the system is made and judged. Server
CPU is the CPU time (user + system) of the process tree over a window; PSS is summed over the process
tree (`PeakPss` samples it every 0.5 s on a thread). A server is stopped by signalling its process group
(SIGTERM, then SIGKILL after 15 s).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .workload import BENCH, PEER_VENVS, THREAD_ENV, Workload

if TYPE_CHECKING:
    from .systems import System

#: talk to 127.0.0.1 directly, whatever *_proxy variables say.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: Any, timeout: float = 5.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with HTTP.open(req, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def pss_mb(procs: Sequence[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_full_info().pss
    return total / 1e6


class PeakPss:
    """Samples the PSS of a process tree every `interval` s on a thread; `.peak` is the largest (MB)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, pss_mb(tree(self.pid)))
            if self._stop.wait(self.interval):
                return


@dataclass
class Server:
    system: System
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float = field(default_factory=time.perf_counter)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> float:
        """SIGTERM to the process group, SIGKILL after 15 s, then SIGKILL to the descendants recorded
        before the stop that are still alive 5 s later (a peer's daemons may leave the group, as Ray's
        can); returns how long the stop took."""
        t0 = time.perf_counter()
        descendants = tree(self.proc.pid)[1:]
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        _, alive = psutil.wait_procs(descendants, timeout=5.0)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        return time.perf_counter() - t0


def command(system: System, w: Workload, port: int, extra: Sequence[str] = (), workers: int = 1) -> list[str]:
    """The command line of an own system: `bare_server.py` (with the system's `bare_args`), or
    ``augury serve`` with the system's arguments and `extra` (``--serve-args``); `workers` processes."""
    if system.serve_args is None:
        return [sys.executable, str(BENCH / "bare_server.py"), *system.bare_args,
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    if workers > 1:
        extra = [*extra, "--workers", str(workers)]
    exe = Path(sys.executable).with_name("augury")
    augury = [str(exe)] if exe.exists() else [sys.executable, "-c", "from augury.cli import main; main()"]
    args = [a.format(model=w.model, store=w.store_url, redis=w.redis_url) for a in system.serve_args]
    return [*augury, "serve", *args, *extra, "--host", "127.0.0.1", "--port", str(port)]


def start(system: System, w: Workload, log_dir: Path, round_no: int, extra: Sequence[str],
          venvs: Path = PEER_VENVS, workers: int = 1, cpus: str = "") -> Server:
    """Start `system` on a free port (pinned with ``taskset -c cpus`` when `cpus` is given)."""
    port = free_port()
    log = log_dir / f"{system.name}_r{round_no}.log"
    env = dict(os.environ, **THREAD_ENV)
    if system.peer is not None:
        cmd, peer_env = system.peer.launch(w, port, venvs)
        # no __pycache__ from the peer scripts in benchmarks/peers/
        env.update(peer_env, PYTHONDONTWRITEBYTECODE="1")
    else:
        cmd = command(system, w, port, extra, workers)
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=w.work)
    return Server(system, proc, port, log)


def wait_ready(server: Server, w: Workload, timeout: float) -> list[str]:
    """Poll with the first check request until it answers 200, then run every check; the problems found.

    Raises RuntimeError when the server exits, answers a status that will not change (4xx, 500), or is not
    ready within `timeout` s. A peer is polled through any status until `timeout`, as the peer harness
    does (Ray Serve's proxy answers 404 until its app is deployed)."""
    checks = server.system.checks(w)
    method, path, body = checks[0].method, checks[0].path, checks[0].body
    last = "no answer"
    while time.perf_counter() - server.started < timeout:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with code {server.proc.returncode} before answering")
        try:
            status, raw = request(server.port, method, path, body, timeout=5.0)
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
            time.sleep(0.2)
            continue
        if status == 200:
            break
        last = f"HTTP {status}: {raw[:500].decode(errors='replace')}"
        if status != 503 and server.system.peer is None:
            raise RuntimeError(f"check request {method} {path} answered {last}")
        time.sleep(0.2)
    else:
        raise RuntimeError(f"not ready after {timeout:g} s (last: {last})")
    problems = []
    for check in checks:
        method, path = check.method, check.path
        status, raw = request(server.port, method, path, check.body)
        try:
            answer = json.loads(raw)
        except ValueError:
            problems.append(f"{method} {path}: HTTP {status}, not JSON: {raw[:300]!r}")
            continue
        problem = check.validate(answer) if status == 200 else f"HTTP {status}"
        if problem:
            problems.append(f"{method} {path}: {problem}; got {raw[:400].decode(errors='replace')}")
    return problems
