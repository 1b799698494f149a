"""One system in one round: start it, check its answers, warm it up, load it, stop it, read its log.

The record holds: the command; the check problems; start-up time (to the first valid answer); PSS at
idle; the process count; wrk's numbers for the ``--duration`` s load (after ``--warmup`` s of discarded
load), with the server's CPU in cores over that window and its peak PSS; the stop time and exit code; and
the log lines that look like errors. A system that fails is recorded with the error and the tail of its
log, and the run goes on; a peer whose venv is missing is recorded as skipped.
"""

from __future__ import annotations

import argparse
import re
import shlex
import time
from typing import Any

from .peers import PEER_START_TIMEOUT
from .servers import PeakPss, cpu_seconds, pss_mb, start, tree, wait_ready
from .systems import System
from .workload import Workload
from .wrk import run_wrk


def run_system(system: System, w: Workload, args: argparse.Namespace, round_no: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"system": system.name, "round": round_no, "description": system.description,
                           "baseline": system.baseline, "same_protocol": system.same_protocol}
    skip = system.peer.missing(args.peer_venvs) if system.peer is not None else None
    if system.peer is not None and skip is None:
        skip = args.peer_problem
    if skip:
        rec["skipped"] = skip
        print(f"  {system.name:11s} r{round_no} SKIPPED: {skip}", flush=True)
        return rec
    log_dir = w.work / "logs"
    log_dir.mkdir(exist_ok=True)
    server = start(system, w, log_dir, round_no, shlex.split(args.serve_args), args.peer_venvs,
                   workers=args.workers, cpus=args.server_cpus)
    rec["command"] = " ".join(server.proc.args)  # type: ignore[arg-type]
    try:
        # the peers are given the peer harness's 180 s (Ray and BentoML start slowly)
        timeout = args.start_timeout if system.peer is None else max(args.start_timeout, PEER_START_TIMEOUT)
        rec["check_problems"] = wait_ready(server, w, timeout)
        rec["startup_s"] = round(time.perf_counter() - server.started, 2)
        rec["pss_idle_mb"] = round(pss_mb(tree(server.proc.pid)), 1)
        run_wrk(system.load, w, server.port, args.connections, args.warmup, args.wrk_threads, args.wrk_cpus)
        procs = tree(server.proc.pid)
        rec["processes"] = len(procs)
        with PeakPss(server.proc.pid) as peak:
            cpu0, t0 = cpu_seconds(procs), time.perf_counter()
            r = run_wrk(system.load, w, server.port, args.connections, args.duration, args.wrk_threads,
                        args.wrk_cpus)
            cpu1, t1 = cpu_seconds(procs), time.perf_counter()
        r["server_cores"] = (cpu1 - cpu0) / (t1 - t0)
        r["peak_pss_mb"] = peak.peak
        rec["load"] = r
        if server.proc.poll() is not None:
            rec["error"] = f"server exited with code {server.proc.returncode} during the load"
    except Exception as exc:  # report the system as failed and go on with the next one
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        rec["stop_s"] = round(server.stop(), 2)
        rec["exit_code"] = server.proc.returncode
        text = server.log.read_text(errors="replace") if server.log.exists() else ""
        rec["log"] = str(server.log)
        flagged = [ln for ln in text.splitlines() if re.search(r"Traceback|ERROR|CRITICAL", ln)]
        rec["log_errors"] = flagged[:20]
        if "error" in rec:
            rec["stderr_tail"] = server.tail()
    print_line(rec)
    return rec


def print_line(rec: dict[str, Any]) -> None:
    """The system's line in the progress output, as soon as it is measured."""
    name = f"{rec['system']:11s} r{rec['round']}"
    if "error" in rec:
        print(f"  {name} FAILED: {rec['error']}\n    stderr tail:\n      "
              + rec.get("stderr_tail", "").replace("\n", "\n      "), flush=True)
        return
    r = rec["load"]
    print(f"  {name} {r['rps']:9.1f} req/s  p50={r['p50_us'] / 1000:6.2f} p90={r['p90_us'] / 1000:6.2f} "
          f"p99={r['p99_us'] / 1000:6.2f} ms  non2xx={r['non_2xx']} sock={r['socket_errors']} "
          f"cores={r['server_cores']:.2f} pss={r['peak_pss_mb']:.0f}MB start={rec['startup_s']}s "
          f"stop={rec['stop_s']}s", flush=True)
    for p in rec["check_problems"]:
        print(f"    !! check: {p}", flush=True)
