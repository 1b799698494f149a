"""Overload benchmark (issue 11): ``augury serve`` (dynamic mode, the HTTP benchmark's 100-tree
HistGradientBoosting model, one-row v1 bodies) under an OPEN-loop load at multiples of its capacity.

Capacity is what wrk measures closed-loop at 32 connections (``wrk -t1 -c32 -d<capacity-s>s``, the
issue's definition) on a fresh server. Each load then runs on a fresh server: `loadgen.c` (compiled
here with ``cc -O2``) sends requests at fixed times (rate x seconds, after a warm-up), on up to
``--max-conns`` keep-alive connections, whatever the server does, and counts latency from when a request
was due (no coordinated omission); a client gives up on a request after ``--timeout-ms``. Every 100 ms a
health probe (GET /v2/health/live; the bare endpoint's GET /health) opens a new connection, as an
orchestrator's probe does: the generator's on the serving port, and a `Prober` thread's on the server's
``--probe-port``. Model calls per second come from the server's /metrics (``augury_batch_rows_count``),
read on the probe port before and after the run.

Runs: the generator against `bare_server.py --coalesce` (same protocol, no model) at 1x, to show what
the generator and the machine add; then the server at each ``--multiples`` of capacity (one run each);
then ``--soak-runs`` runs of ``--soak-s`` seconds at ``--soak`` of capacity (collapse: any second whose
200s fall under half the offered rate).

Everything shares the machine's cores: the generator, wrk and the server (2 cores in the reported runs).
The benchmark lock (/tmp/BENCH_LOCK) is held only while measuring.

    python benchmarks/overload_bench.py --out /tmp/augury-bench/overload.json
    python benchmarks/overload_bench.py --multiples 3 --soak-runs 0      # one quick point
    python benchmarks/overload_bench.py --serve-args "--max-in-flight 128"  # the server's own flags
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from httpbench.servers import free_port  # noqa: E402
from httpbench.workload import THREAD_ENV, WORK, prepare  # noqa: E402

PREDICT = "/v1/models/hgb20:predict"
LOCK = Path("/tmp/BENCH_LOCK")
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@contextlib.contextmanager
def bench_lock(enabled: bool) -> Iterator[None]:
    """Hold /tmp/BENCH_LOCK (waiting while another benchmark holds it), with an `owner` file inside that
    says which process holds it."""
    if enabled:
        while True:
            try:
                LOCK.mkdir()
                break
            except FileExistsError:
                print("waiting for /tmp/BENCH_LOCK ...", file=sys.stderr, flush=True)
                time.sleep(30)
        (LOCK / "owner").write_text(f"{Path(sys.argv[0]).name} pid {os.getpid()}\n")
    try:
        yield
    finally:
        if enabled:
            with contextlib.suppress(FileNotFoundError):  # someone took it for stale: nothing to give back
                (LOCK / "owner").unlink(missing_ok=True)
                LOCK.rmdir()


@contextlib.contextmanager
def server(cmd: list[str], log: Path, port: int, probe: str = "/v2/health/live"
           ) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                                env=dict(os.environ, **THREAD_ENV))
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                with HTTP.open(f"http://127.0.0.1:{port}{probe}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.3)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def augury(work: Path, port: int, extra: Sequence[str]) -> list[str]:
    exe = Path(sys.executable).with_name("augury")
    return [str(exe), "serve", "--model", str(work / "hgb20.joblib"), "--host", "127.0.0.1",
            "--port", str(port), *extra]


def model_calls(port: int) -> float:
    try:
        with HTTP.open(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            text = r.read().decode()
    except (OSError, http.client.HTTPException):  # a scrape that fails is reported as NaN
        return float("nan")
    counts = re.findall(r"^augury_batch_rows_count(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return sum(float(c) for c in counts)  # none before the first batch


class Prober(threading.Thread):
    """A health probe on the probe port (``--probe-port``), as an orchestrator's: every `every_s` a new
    connection, ``GET /v2/health/live``, its time to the whole answer recorded (None: no answer within
    `timeout_s`). The generator's own probes go to the serving port."""

    def __init__(self, port: int, every_s: float = 0.1, timeout_s: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.port, self.every_s, self.timeout_s = port, every_s, timeout_s
        self.times: list[float | None] = []
        self.stop = threading.Event()

    def run(self) -> None:
        request = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        due = time.monotonic()
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout_s) as sock:
                    sock.sendall(request)
                    got = b""
                    while chunk := sock.recv(65536):
                        got += chunk
                ok = got.startswith(b"HTTP/1.1 200")
                self.times.append((time.monotonic() - started) * 1e3 if ok else None)
            except OSError:
                self.times.append(None)
            due += self.every_s
            self.stop.wait(max(0.0, due - time.monotonic()))

    def summary(self) -> dict[str, Any]:
        answered = sorted(t for t in self.times if t is not None)
        def pct(p: float) -> float:
            return answered[min(len(answered) - 1, int(p / 100 * len(answered)))] if answered else -1.0
        return {"probe_port_sent": len(self.times), "probe_port_answered": len(answered),
                "probe_port_p50_ms": pct(50), "probe_port_p99_ms": pct(99),
                "probe_port_max_ms": answered[-1] if answered else -1.0}


def capacity(port: int, body: Path, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds:g}s", "--latency", "-s", str(HERE / "wrk" / "post.lua"),
         f"http://127.0.0.1:{port}{PREDICT}"],
        env=dict(os.environ, BODY_FILE=str(body)), capture_output=True, text=True, check=True).stdout
    rec = json.loads(out.split("WRKJSON ", 1)[1].splitlines()[0])
    rec["rps"] = rec["requests"] / (rec["duration_us"] / 1e6)
    return rec


def cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user, system; all threads) process `pid` has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def load(gen: Path, port: int, body: Path, rate: float, args: argparse.Namespace,
         seconds: float, probe: str = "/v2/health/live", probe_port: int | None = None,
         server_pid: int | None = None) -> dict[str, Any]:
    """One open-loop run; with `probe_port`, a `Prober` there over the measured seconds, and the model
    calls read there (the serving port's queue may hold the scrape for seconds). With `server_pid`, the
    server's CPU seconds over the generator's run (`server_cpu_s`, the span of its `gen_cpu_s`: warm-up,
    measured seconds and 2 s for the last answers), to set beside the generator's on the shared cores."""
    scrape = probe_port or port
    before = model_calls(scrape)
    server_before = cpu_s(server_pid) if server_pid else (0.0, 0.0)
    cmd = [str(gen), "127.0.0.1", str(port), PREDICT, str(body), f"{rate:.0f}", f"{seconds:g}",
           f"{args.warmup:g}", str(args.max_conns), probe, "100", str(args.timeout_ms)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as gen_proc:
        prober = Prober(probe_port) if probe_port else None
        if prober is not None:
            time.sleep(args.warmup)
            prober.start()
        out, _ = gen_proc.communicate()
        if prober is not None:
            prober.stop.set()
            prober.join()
    server_after = cpu_s(server_pid) if server_pid else (math.nan, math.nan)
    if gen_proc.returncode:
        raise RuntimeError(f"the load generator failed ({gen_proc.returncode})")
    rec: dict[str, Any] = json.loads(out)
    rec["server_user_s"] = server_after[0] - server_before[0]
    rec["server_sys_s"] = server_after[1] - server_before[1]
    rec["server_cpu_s"] = rec["server_user_s"] + rec["server_sys_s"]
    rec["model_calls_per_s"] = (model_calls(scrape) - before) / (seconds + args.warmup + 2)
    if prober is not None:
        rec.update(prober.summary())
    return rec


def row(label: str, cap: float, rec: dict[str, Any]) -> str:
    s = rec["seconds"]
    ok, s503 = rec["ok"] / s, rec["s503"] / s
    probe_port = ""
    if "probe_port_sent" in rec:
        probe_port = (f"{rec['probe_port_p50_ms']:.1f} / {rec['probe_port_p99_ms']:.1f} "
                      f"({rec['probe_port_answered']}/{rec['probe_port_sent']})")
    return (f"| {label} | {rec['offered_rate']:,.0f} | {ok:,.0f} ({ok / cap:.0%}) | {s503:,.0f} | "
            f"{rec['s503_retry_after'] / max(rec['s503'], 1):.0%} | {rec['timeouts'] / s:,.0f} | "
            f"{rec['ok_p50_ms']:.1f} / {rec['ok_p99_ms']:.1f} | {rec['s503_p99_ms']:.1f} | {probe_port} | "
            f"{rec['probe_p50_ms']:.1f} / {rec['probe_p99_ms']:.1f} ({rec['probes']}/{rec['probes_sent']}) | "
            f"{min(rec['ok_per_sec'] or [0]):,} | {rec['model_calls_per_s']:,.0f} | {rec['conns']:,} | "
            f"{rec['gen_cpu_s']:.1f} | {rec.get('server_cpu_s', float('nan')):.1f} |")


HEADER = ("| load | offered/s | 200/s (of capacity) | 503/s | 503 with Retry-After | timed out/s | "
          "200 p50 / p99 ms | 503 p99 ms | probe port: probe p50 / p99 ms (answered) | serving port: probe "
          "p50 / p99 ms (answered) | worst second's 200s | model calls/s | connections | generator CPU s | "
          "server CPU s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=WORK, help=f"the HTTP benchmark's workload [{WORK}]")
    ap.add_argument("--multiples", default="1,2,3,5", help="offered load, multiples of capacity [1,2,3,5]")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load [10]")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of load first, not counted [2]")
    ap.add_argument("--capacity-s", type=float, default=10.0, help="seconds of wrk -c32 for capacity [10]")
    ap.add_argument("--soak", type=float, default=0.65, help="soak load, as a share of capacity [0.65]")
    ap.add_argument("--soak-runs", type=int, default=5, help="soak runs [5]")
    ap.add_argument("--soak-s", type=float, default=60.0, help="seconds per soak run [60]")
    ap.add_argument("--max-conns", type=int, default=4000, help="generator connections at most [4000]")
    ap.add_argument("--timeout-ms", type=int, default=5000, help="a client gives up after this [5000]")
    ap.add_argument("--serve-args", default="", help="extra arguments for augury serve")
    ap.add_argument("--loadgen-source", type=Path, default=HERE / "loadgen.c",
                    help="the generator's C source [benchmarks/loadgen.c]")
    ap.add_argument("--no-lock", action="store_true", help="do not take /tmp/BENCH_LOCK")
    ap.add_argument("--out", type=Path, help="write every record to this JSON file")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the lock and the servers are let go

    w = prepare(args.work)
    body = w.work / "body_v1.json"
    logs = w.work / "logs"
    logs.mkdir(exist_ok=True)
    gen = w.work / "loadgen"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("a C compiler (cc) is needed for the load generator")
    subprocess.run([cc, "-O2", "-o", str(gen), str(args.loadgen_source)], check=True)
    extra = args.serve_args.split()
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "loads": [], "soak": []}
    lines: list[str] = []

    with bench_lock(not args.no_lock):
        port = free_port()
        with server(augury(w.work, port, extra), logs / "overload_capacity.log", port):
            capacity(port, body, 3)  # warm-up
            cap = capacity(port, body, args.capacity_s)
        results["capacity"] = cap
        rps = cap["rps"]
        print(f"capacity (wrk -t1 -c32 -d{args.capacity_s:g}s): {rps:,.0f} requests/s, "
              f"p99 {cap['p99_us'] / 1e3:.1f} ms", flush=True)
        port = free_port()
        bare = [sys.executable, str(HERE / "bare_server.py"), "--coalesce", "--host", "127.0.0.1",
                "--port", str(port)]
        with server(bare, logs / "overload_bare.log", port, "/health") as proc:
            rec = load(gen, port, body, rps, args, args.seconds, "/health", server_pid=proc.pid)
        results["bare"] = rec
        lines.append(row("bare endpoint, 1x", rps, rec))
        print(lines[-1], flush=True)
        for multiple in [float(m) for m in args.multiples.split(",") if m]:
            port = free_port()
            probe_port = free_port()
            with server(augury(w.work, port, [*extra, "--probe-port", str(probe_port)]),
                        logs / f"overload_{multiple:g}x.log", port) as proc:
                rec = load(gen, port, body, rps * multiple, args, args.seconds, probe_port=probe_port,
                           server_pid=proc.pid)
            rec["multiple"] = multiple
            results["loads"].append(rec)
            lines.append(row(f"{multiple:g}x", rps, rec))
            print(lines[-1], flush=True)
        for i in range(args.soak_runs):
            port = free_port()
            probe_port = free_port()
            with server(augury(w.work, port, [*extra, "--probe-port", str(probe_port)]),
                        logs / f"overload_soak{i}.log", port) as proc:
                rec = load(gen, port, body, rps * args.soak, args, args.soak_s, probe_port=probe_port,
                           server_pid=proc.pid)
            offered = rec["offered_rate"]
            rec["collapsed_seconds"] = sum(1 for n in rec["ok_per_sec"] if n < offered / 2)
            results["soak"].append(rec)
            label = f"{args.soak:.0%}, run {i + 1} ({rec['collapsed_seconds']} s collapsed)"
            lines.append(row(label, rps, rec))
            print(lines[-1], flush=True)
            if args.out:  # kept as it goes
                args.out.write_text(json.dumps(results, indent=1))

    print(f"\ncapacity {rps:,.0f} requests/s (wrk -c32)\n\n{HEADER}\n" + "\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
