"""Advisor against reality: the latency `augury advise` predicts for dynamic serving, beside a real
``augury serve`` under an open-loop Poisson load, and the error between them (issue 15).

What is measured:

1. The workload, built once under /tmp/augury-bench/advise (``--work``): a HistGradientBoostingClassifier
   (100 iterations, no early stopping, features f0..f19) trained on 50k rows of make_classification,
   saved with joblib as ``hgb20.joblib``, and a 20k-row sample Parquet with an ``id`` column. With
   ``--model xgb`` (under /tmp/augury-bench/advise-xgb), an XGBClassifier of 100 trees of depth 6 on the
   same rows, saved as ``xgb20.ubj`` and served as ``xgb20``: the issue's own case.
2. Calibration first (``augury.advise.calibrate.calibrate()``, as ``augury advise --calibrate`` does: a
   real ``augury serve`` of a tiny model on one core, this process's client on the others, and the
   stall probe on the server's core), unless ``--calibration FILE`` gives one or ``--reuse`` an earlier
   run's. Then ``advise(model, sample, key_columns=("id",), qps=--advise-qps, latency_slo_ms=--slo-ms,
   cores=1, budget_s=--budget, overheads=<calibration>)``, run once in this process pinned to the server's
   core: its measured `ModelCost` (``advice.measurements.model``) and its recommended batcher settings.
   Both are kept beside ``--out`` (``.pickle``) for ``--reuse``. Since 2026-12-05 this process is not
   pinned during it: with calibration, the advisor serves the model itself for its pauses (on the first
   of this process's cores, the server's core 0 by default, with its client on the others), and the
   prediction uses those (``advice.measurements.serving``; the column "with the calibration server's
   pauses" is the prediction as before).
3. Per server setting (``--settings``: ``advised`` and ``64/0`` by default, as B/D), ONE ``augury serve
   --model M --max-batch-size B --max-delay-ms D`` process (one worker, OMP/OPENBLAS/MKL threads = 1,
   pinned with sched_setaffinity to ``--server-core``; this process and the generator to
   ``--client-core``), checked with one real predict, warmed up, then:
   - E: the p50 round trip of ``GET /v2/health/ready``, one at a time on one keep-alive connection
     (``--idle-requests`` of them), and the same for a one-row predict ("idle predict"), with the
     server's CPU time per idle predict;
   - per request rate: ``--stall-probe`` s of the stall probe on the server's core (the server idle;
     with ``--probe-during`` again during the load, which counts the server's own work too), then the
     C open-loop generator (benchmarks/loadgen.c, issue 11's, with Poisson arrivals; compiled
     here with ``cc -O2``, run at SCHED_FIFO 1 with ``chrt`` when permitted: it is the instrument) for
     ``--warmup`` s, not counted, then ``--duration`` s: one-row v1 predicts (``POST
     /v1/models/hgb20:predict``, or ``xgb20``, one body), ``--repeats`` times back to back (0.5 s of
     warm-up before each after the first; with ``--rounds R`` the rates in turn, R times over, each
     rate's runs of all rounds taken together; the table has the median p50 and p99 and each run's
     p99), each sent when due on an idle keep-alive connection or a new one, its latency from when it
     was due to the end of its answer (no coordinated omission). The
     asyncio client used before queued requests of its own at 1,000-3,000 req/s (send lags of several
     ms). Reported: p50/p99, how late sends were (lag; BEHIND when its p99 is over 1 ms), non-200
     answers, the server's CPU (cores), and from its /metrics: rows per model call, model call time and
     queue wait.
4. Beside each run, `predict_latency(cost, qps, max_batch_size=B, max_delay_ms=D, workers=1, ...)` with
   the calibrated overheads and stalls (the issue's target: p99 within 25 %), with the stalls probed just
   before the run (the queueing model's own error, the machine's change since calibration aside) and
   during it, with no stalls, and with the built-in overheads and extra_s = E. The error is (measured -
   predicted) / measured. A second table says where the server's CPU went per request.

Rates (``--rates``): a number <= 1 is a share of the base rate, above 1 a rate in req/s. The base rate is
the advisor's per-core capacity at the setting's B, capped at ``--max-rate``.

The machine is shared: each measuring step (calibration, the advisor's measuring, each setting's runs)
holds /tmp/BENCH_LOCK only while it runs, and the process runs at ``--nice`` -15 (its servers and the
generator too) when permitted. The run for issue 15 (about 2 minutes of lock):

    python benchmarks/advise_bench.py --settings advised --out /tmp/augury-bench/advise/results.json
    python benchmarks/advise_bench.py --reuse /tmp/augury-bench/advise/results.pickle --settings 64/0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import pickle
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from overload_bench import bench_lock

WORK = Path("/tmp/augury-bench/advise")
#: the models `--model` serves: the name they are served under, and their file (built by `prepare`).
MODELS = {"hgb": ("hgb20", "hgb20.joblib"), "xgb": ("xgb20", "xgb20.ubj")}
N_FEATURES = 20
TRAIN_ROWS = 50_000
SAMPLE_ROWS = 20_000
BODIES = 1_000
#: bump when `prepare` changes what it writes, so an old workload is rebuilt.
SETUP_VERSION = 1
READY = "/v2/health/ready"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "PYTHONUNBUFFERED": "1"}
#: a run is BEHIND when its sends slipped more than this share of the run, or their lag p99 exceeds LAG_S.
BEHIND_SHARE = 0.03
LAG_S = 0.001
#: the warm-up before each repeated run of a rate after the first (--repeats).
REPEAT_WARMUP_S = 0.5
#: the last part of a wait before a send is spun (asyncio.sleep(0)), not slept: timers are coarse.
SPIN_S = 0.005
#: talk to 127.0.0.1 directly, whatever *_proxy variables say.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------- workload


def v1(name: str) -> str:
    return f"/v1/models/{name}:predict"


def prepare(work: Path, kind: str = "hgb") -> dict[str, Any]:
    """Build the model (`MODELS[kind]`) and the sample under `work` unless there; the workload's
    description."""
    work.mkdir(parents=True, exist_ok=True)
    meta_path = work / "meta.json"
    name, file = MODELS[kind]
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("setup_version") == SETUP_VERSION and meta.get("name", "hgb20") == name:
            return {"name": name, "file": file, **meta}
    print(f"building the workload in {work} (once) ...", flush=True)
    import joblib
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sklearn
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = make_classification(n_samples=TRAIN_ROWS + SAMPLE_ROWS, n_features=N_FEATURES, n_informative=10,
                               n_redundant=5, random_state=0)
    x_s = x[TRAIN_ROWS:]
    if kind == "xgb":  # the issue's own case: 100 trees of depth 6, one thread
        import xgboost

        clf = xgboost.XGBClassifier(n_estimators=100, max_depth=6, tree_method="hist", n_jobs=1,
                                    random_state=0)
        clf.fit(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
        clf.get_booster().save_model(str(work / file))
        described = f"XGBClassifier(n_estimators=100, max_depth=6) (xgboost {xgboost.__version__})"
        n_iter = 100
    else:
        # early_stopping=False: exactly 100 trees (the default turns early stopping on past 10k rows).
        clf = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
        clf.fit(x[:TRAIN_ROWS], y[:TRAIN_ROWS])
        joblib.dump(clf, work / file)
        described, n_iter = "HistGradientBoostingClassifier(max_iter=100)", int(clf.n_iter_)
    (work / f"{name}.augury.toml").write_text(f'name = "{name}"\nversion = "1"\n')
    names = [f"f{j}" for j in range(N_FEATURES)]
    pq.write_table(pa.table({"id": [f"s{i:06d}" for i in range(SAMPLE_ROWS)],
                             **{n: x_s[:, j] for j, n in enumerate(names)}}), work / "sample.parquet")
    bodies = [json.dumps({"instances": [dict(zip(names, map(float, row), strict=True))]})
              for row in x_s[:BODIES]]
    (work / "bodies.jsonl").write_text("\n".join(bodies) + "\n")
    meta = {"setup_version": SETUP_VERSION, "name": name, "model": f"{described}, "
            f"{N_FEATURES} features, {TRAIN_ROWS:,} training rows", "n_iter": n_iter,
            "sample_rows": SAMPLE_ROWS, "scikit-learn": sklearn.__version__,
            "check_proba": [float(v) for v in clf.predict_proba(x_s[:1])[0]]}
    meta_path.write_text(json.dumps(meta, indent=2))
    return {"file": file, **meta}


# ---------------------------------------------------------------------------------------------- server


def pin(pid: int, core: int) -> None:
    if core >= 0:
        os.sched_setaffinity(pid, {core})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(port: int, method: str, path: str, body: bytes | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body else {})
    try:
        with HTTP.open(req, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    command: list[str]

    def procs(self) -> list[psutil.Process]:
        try:
            p = psutil.Process(self.proc.pid)
            return [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.procs():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def metrics(self) -> dict[str, float]:
        """The /metrics samples, by name with labels."""
        from augury.advise.load import metric_values

        status, raw = http(self.port, "GET", "/metrics")
        return metric_values(raw) if status == 200 else {}

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after 15 s."""
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_server(model: Path, path: str, b: int, d: float, core: int, log: Path, timeout: float,
                 check_body: bytes, extra: Sequence[str] = ()) -> Server:
    """Start ``augury serve`` and wait until a real predict to `path` answers 200 with predictions."""
    port = free_port()
    exe = Path(sys.executable).with_name("augury")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from augury.cli import main; main()"]
    cmd += ["serve", "--model", str(model), "--max-batch-size", str(b), "--max-delay-ms", f"{d:g}",
            "--host", "127.0.0.1", "--port", str(port), *extra]
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, env=dict(os.environ, **THREAD_ENV), stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=(lambda: pin(0, core)) if core >= 0 else None)
    server = Server(proc, port, log, cmd)
    started, last = time.perf_counter(), "no answer"
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"augury serve exited with {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            status, raw = http(port, "POST", path, check_body)
        except OSError as exc:
            last = repr(exc)
            time.sleep(0.2)
            continue
        if status == 200 and b'"predictions"' in raw:
            return server
        last = f"HTTP {status}: {raw[:300]!r}"
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"augury serve not ready after {timeout:g} s (last: {last}); log: {log}")


# ---------------------------------------------------------------------------------------------- client


async def _read_response(r: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response; its status."""
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    i = lower.find(b"\r\ncontent-length:")
    if i >= 0:
        await r.readexactly(int(lower[i + 17:lower.index(b"\r\n", i + 2)]))
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            await r.readexactly(size + 2)
            if size == 0:
                break
    return status


class Pool:
    """Keep-alive connections to one server; `call` takes an idle one or opens a new one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.retries = 0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_connection("127.0.0.1", self.port)
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return r, w

    async def fill(self, n: int) -> None:
        self.idle.extend(await asyncio.gather(*(self._open() for _ in range(n))))

    async def call(self, payload: bytes) -> int:
        reused = bool(self.idle)
        r, w = self.idle.pop() if reused else await self._open()
        try:
            w.write(payload)
            status = await _read_response(r)
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()
            if not reused:
                raise
            self.retries += 1  # the server closed an idle connection (keep-alive timeout): once more
            r, w = await self._open()
            w.write(payload)
            status = await _read_response(r)
        self.idle.append((r, w))
        return status

    def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def sequential(port: int, payloads: Sequence[bytes], n: int) -> list[float]:
    """Round trips of `n` requests one after another on one keep-alive connection."""
    pool = Pool(port)
    out = []
    try:
        for i in range(n):
            t = time.perf_counter()
            if await pool.call(payloads[i % len(payloads)]) != 200:
                raise RuntimeError("a sequential request did not answer 200")
            out.append(time.perf_counter() - t)
    finally:
        pool.close()
    return out


def build_loadgen(work: Path) -> Path:
    """Compile benchmarks/loadgen.c (issue 11's open-loop generator) into `work`, as overload_bench does."""
    gen = work / "loadgen"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("a C compiler (cc) is needed for the load generator (benchmarks/loadgen.c)")
    subprocess.run([cc, "-O2", "-o", str(gen), str(Path(__file__).with_name("loadgen.c"))], check=True)
    return gen


def open_loop(gen: Path, port: int, path: str, body: Path, rate: float, duration: float, warmup: float,
              seed: int, max_conns: int, realtime: bool = False) -> dict[str, Any]:
    """`warmup` + `duration` s of Poisson arrivals at `rate` from the C generator (`loadgen.c`, run as a
    child process on this process's core): latency from each request's due time to the end of its
    answer, for the requests due after the warm-up. The generator is one epoll thread with sends timed
    to the microsecond, so unlike the earlier asyncio client it does not queue requests of its own
    (which, at 1,000-3,000 req/s, had shown as send lags of several ms)."""
    cmd = [str(gen), "127.0.0.1", str(port), path, str(body), f"{rate:.3f}", f"{duration:g}", f"{warmup:g}",
           str(max_conns), READY, "0", "10000", f"poisson:{seed}"]
    if realtime and shutil.which("chrt"):
        # the generator is the measuring instrument: at a real-time priority (SCHED_FIFO 1) other work
        # on its core does not delay its sends and reads (it uses a few % of the core)
        cmd = ["chrt", "-f", "1", *cmd]
    rec: dict[str, Any] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    ok = rec["ok"]
    lag99 = rec["send_lag_p99_ms"] / 1e3
    statuses = {"200": ok, "503": rec["s503"], "other": rec["other"], "errors": rec["errors"]}
    return {
        "target_rps": rate, "answered": ok, "statuses": {k: v for k, v in statuses.items() if v},
        "timed_out": rec["timeouts"] + rec["unanswered"] + rec["never_sent"], "duration_s": duration,
        "achieved_rps": ok / duration, "p50_s": rec["ok_p50_ms"] / 1e3, "p90_s": rec["ok_p90_ms"] / 1e3,
        "p99_s": rec["ok_p99_ms"] / 1e3, "p999_s": rec["ok_p999_ms"] / 1e3, "mean_s": rec["ok_mean_ms"] / 1e3,
        "max_s": rec["ok_max_ms"] / 1e3, "lag_p50_s": rec["send_lag_p50_ms"] / 1e3, "lag_p99_s": lag99,
        "lag_max_s": rec["send_lag_max_ms"] / 1e3, "behind": lag99 > LAG_S, "connections": rec["conns"],
        "max_backlog": rec["max_backlog"], "generator_cpu_s": rec["gen_cpu_s"], "loadgen": rec,
        "command": " ".join(cmd),
    }


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# ---------------------------------------------------------------------------------------------- predicting


def _delta(after: dict[str, float], before: dict[str, float], name: str) -> float | None:
    s, c = f"{name}_sum", f"{name}_count"
    if s not in after or c not in after:
        return None
    n = after[c] - before.get(c, 0.0)
    return (after[s] - before.get(s, 0.0)) / n if n > 0 else None


def predictions(cost: Any, rate: float, b: int, d: float, e: float, cal: Any, now: Any,
                during: Any, fresh: Any = None, tiny: Any = None) -> dict[str, Any]:
    """The advisor's predictions at `rate`: with the built-in overheads and extra_s = E ("e"); with the
    overheads calibrated on this machine, round trip included ("cal"); the same without stalls
    ("cal_no_stalls"); and with the stalls `now`, probed on the server's core just before the run
    ("cal_stalls_now": the queueing model's own error, the machine's change since calibration aside);
    with the stalls probed on the server's core during the run ("cal_stalls_during"); and without the
    server's own pauses ("cal_no_pauses": the model before they were measured); with `fresh`, a
    calibration taken again just before this setting's runs ("recal": the model's own error, the
    machine's change since the first calibration aside). `cal` is what the advisor used (with the
    pauses of a server of this model, when it measured them); "cal_tiny_pauses" is the same with the
    calibration server's pauses (`tiny`, the calibration as it was), as the advisor predicted before.)"""
    from dataclasses import replace

    from augury.advise import predict_latency
    from augury.advise.overheads import BUILT_IN
    from augury.advise.stalls import NO_PAUSES, NONE

    out: dict[str, Any] = {}
    for label, overheads, extra in (("e", BUILT_IN, e), ("cal", cal, None),
                                    ("cal_no_stalls", replace(cal, stalls=NONE), None),
                                    ("cal_no_pauses", replace(cal, pauses_inline=NO_PAUSES,
                                                              pauses_hop=NO_PAUSES), None),
                                    ("cal_stalls_now", replace(cal, stalls=now), None),
                                    ("cal_stalls_during", replace(cal, stalls=during), None),
                                    *((("recal", fresh, None),) if fresh is not None else ()),
                                    *((("cal_tiny_pauses", replace(cal, pauses_inline=tiny.pauses_inline,
                                                                   pauses_hop=tiny.pauses_hop), None),)
                                      if tiny is not None else ())):
        r = predict_latency(cost, rate, max_batch_size=b, max_delay_ms=d, workers=1, extra_s=extra,
                            overheads=overheads)
        out[label] = {"p50_s": r.p50_s, "p99_s": r.p99_s, "mean_batch": r.mean_batch,
                      "utilisation": r.utilisation, "stable": r.stable, "busy": r.busy}
    return out


def curve_time(cost: Any, rows: float | None) -> float | None:
    """The advisor's median model call time (without the server's own work) at a (mean, fractional) batch
    size, interpolated."""
    from augury.advise import service_curve

    if rows is None:
        return None
    curve = service_curve(cost, serving=False)
    lo = max(1, math.floor(rows))
    return curve.time(lo) + (curve.time(lo + 1) - curve.time(lo)) * max(rows - lo, 0.0)


def err(measured: float, predicted: float) -> float:
    return (measured - predicted) / measured if measured > 0 and math.isfinite(predicted) else math.nan


# ---------------------------------------------------------------------------------------------- driving


def parse_settings(text: str, advised: tuple[int, float]) -> list[tuple[int, float]]:
    out: list[tuple[int, float]] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "advised":
            s = advised
        else:
            b, _, d = part.partition("/")
            s = (int(b), float(d or 0))
        if s not in out:
            out.append(s)
    return out


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """`--repeats` runs of one rate as one: the median of their p50s, p99s and p99.9s, the longest
    latency and send lag, the counts added up, and each run's p50 and p99 (`p50_runs_s`, `p99_runs_s`:
    the measurement's own spread)."""
    out = dict(runs[0])
    for name in ("p50_s", "p90_s", "p99_s", "p999_s", "mean_s", "achieved_rps"):
        out[name] = float(np.median([r[name] for r in runs]))
    for name in ("max_s", "lag_p99_s", "lag_max_s", "max_backlog"):
        out[name] = max(r[name] for r in runs)
    for name in ("answered", "timed_out", "duration_s", "generator_cpu_s"):
        out[name] = sum(r[name] for r in runs)
    out["statuses"] = {k: sum(r["statuses"].get(k, 0) for r in runs)
                       for k in {k for r in runs for k in r["statuses"]}}
    out["behind"] = any(r["behind"] for r in runs)
    out["p50_runs_s"] = [r["p50_s"] for r in runs]
    out["p99_runs_s"] = [r["p99_s"] for r in runs]
    out["loadgen"] = [r["loadgen"] for r in runs]
    return out


def run_setting(b: int, d: float, cost: Any, args: argparse.Namespace, payloads: list[bytes],
                capacity: float, log_dir: Path, cal: Any, gen: Path, fresh: Any = None,
                tiny: Any = None) -> dict[str, Any]:
    from augury.advise import predict_latency, service_curve
    from augury.advise.stalls import NONE, probe, settled

    rec: dict[str, Any] = {"max_batch_size": b, "max_delay_ms": d, "capacity_rps": capacity, "runs": []}
    base = min(capacity, args.max_rate)
    rates = [f * base if f <= 1 else f for f in args.rates]
    rec["base_rps"] = base
    body = payloads[0].split(b"\r\n\r\n", 1)[1]
    body_path = log_dir / "body.json"
    body_path.write_bytes(body)
    server = start_server(args.work / args.model_file, args.path, b, d, args.server_core,
                          log_dir / f"serve_b{b}_d{d:g}.log", args.start_timeout, body,
                          args.serve_args.split())
    rec["command"] = " ".join(server.command)
    try:
        open_loop(gen, server.port, args.path, body_path, rates[0], 1.0, args.warmup, 99, args.connections)
        ready = request_bytes("GET", READY)
        rts = run_async(sequential(server.port, [ready], args.idle_requests))
        e = float(np.median(rts))
        before, cpu0 = server.metrics(), server.cpu_s()
        idle = run_async(sequential(server.port, payloads, args.idle_requests))
        cpu1, after = server.cpu_s(), server.metrics()
        model_s = _delta(after, before, "augury_model_inference_seconds") or 0.0
        cpu_per_req = (cpu1 - cpu0) / args.idle_requests
        curve_1 = service_curve(cost, serving=False).time(1)
        rec["idle"] = {"ready_p50_s": e, "ready_p99_s": float(np.percentile(rts, 99)),
                       "predict_p50_s": float(np.median(idle)),
                       "predict_p99_s": float(np.percentile(idle, 99)),
                       "server_cpu_per_predict_s": cpu_per_req, "model_call_s": model_s,
                       "curve_call_s": curve_1, "rest_cpu_per_request_s": cpu_per_req - curve_1,
                       "predicted_p50_s": predict_latency(cost, 1.0, max_batch_size=b, max_delay_ms=d,
                                                          overheads=cal).p50_s}
        print(f"  B={b} D={d:g}: E (GET {READY} p50) {e * 1e3:.3f} ms; idle one-row predict p50 "
              f"{np.median(idle) * 1e3:.3f} ms; server CPU per idle predict {cpu_per_req * 1e6:.0f} us "
              f"(model call {model_s * 1e6:.0f} us; advisor's batch-1 call {curve_1 * 1e6:.0f} us)",
              flush=True)
        core = args.server_core if args.server_core >= 0 else None
        loaded_s = args.warmup + args.repeats * args.duration + (args.repeats - 1) * REPEAT_WARMUP_S
        seen: list[dict[str, Any]] = [{"runs": [], "now": [], "during": [], "cpu_s": 0.0, "metrics": {}}
                                      for _ in rates]
        # --rounds: the rates in turn, R times over, so that each rate's runs spread over the same minutes
        # as the others' (a rate run in a busy minute is not compared with one run in a quiet one)
        for round_ in range(args.rounds):
            for k, rate in enumerate(rates):
                got = seen[k]
                got["now"].append(probe(args.stall_probe, core))
                before, cpu0 = server.metrics(), server.cpu_s()
                # --probe-during: the probe again, on the server's core while it serves (a thread of this
                # process, which only waits for the generator meanwhile). Off by default: it also waits
                # for the server's own work (r9: 176-255 "stalls" a second against 2-5 just before), and
                # its wake-ups take the server's core 2,000 times a second
                with ThreadPoolExecutor(1) as watcher:
                    watching = watcher.submit(probe, loaded_s, core) if args.probe_during else None
                    # --repeats: the same rate again right after (a short warm-up each), other arrivals
                    got["runs"] += [open_loop(gen, server.port, args.path, body_path, rate, args.duration,
                                              args.warmup if j == 0 else REPEAT_WARMUP_S,
                                              100 * round_ + 10 * (k + 1) + j, args.connections,
                                              args.client_rt)
                                    for j in range(args.repeats)]
                    if watching is not None:
                        got["during"].append(watching.result())
                cpu1, after = server.cpu_s(), server.metrics()
                got["cpu_s"] += cpu1 - cpu0
                for name, value in after.items():
                    got["metrics"][name] = got["metrics"].get(name, 0.0) + value - before.get(name, 0.0)
                if args.rounds > 1:
                    print(f"  round {round_ + 1}: {rate:,.0f} req/s p99 "
                          f"{', '.join(_ms(r['p99_s']) for r in got['runs'][-args.repeats:])} ms", flush=True)
                if server.proc.poll() is not None:
                    raise RuntimeError(f"augury serve exited with {server.proc.returncode} during the load")
        for k, rate in enumerate(rates):
            got = seen[k]
            run = combined(got["runs"])
            now = settled(got["now"])[0]
            during = settled(got["during"])[0] if got["during"] else NONE
            # the server's CPU over the whole run (warm-up, measured part, then about 2 s idle while the
            # generator waits for the last answers): per request from the rows it scored
            deltas = got["metrics"]
            rows_scored = max(deltas.get("augury_batch_rows_sum", 0.0), 1.0)
            run["server_cpu_per_request_s"] = got["cpu_s"] / rows_scored
            run["server_cores"] = run["server_cpu_per_request_s"] * rate
            run["client_cores"] = run["generator_cpu_s"] / ((loaded_s + 2.0 * args.repeats) * args.rounds)
            run["mean_batch_rows"] = _delta(deltas, {}, "augury_batch_rows")
            run["mean_model_call_s"] = _delta(deltas, {}, "augury_model_inference_seconds")
            run["mean_queue_wait_s"] = _delta(deltas, {}, "augury_queue_wait_seconds")
            run["predicted"] = predictions(cost, rate, b, d, e, cal, now, during, fresh, tiny)
            run["stalls_during"] = {"per_s": during.per_s, "share": during.share,
                                    "durations_s": list(during.durations_s)}
            run["stalls_now"] = {"per_s": now.per_s, "share": now.share,
                                 "durations_s": list(now.durations_s),
                                 "shares": [x.share for x in got["now"]]}
            run["curve_call_s"] = curve_time(cost, run["mean_batch_rows"])
            for p in run["predicted"].values():
                p["err_p50"] = err(run["p50_s"], p["p50_s"])
                p["err_p99"] = err(run["p99_s"], p["p99_s"])
            rec["runs"].append(run)
            print("  " + row(b, d, run, cal), flush=True)
    finally:
        server.stop()
    return rec


def _ms(s: float | None) -> str:
    return "-" if s is None or not math.isfinite(s) else f"{s * 1e3:.2f}"


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x * 100:+.0f}%"


HEADER = ("| req/s | B/D | predicted p50 / p99 ms (advisor) | measured p50 / p99 ms (median of runs) "
          "| error p50 / p99 | measured p99 of each run ms | p99 with the calibration server's pauses: "
          "predicted, error | p99: stalls probed just before: predicted, error | p99: stalls probed "
          "during: predicted, error | p99 without stalls: predicted, error | p99 without pauses: predicted, "
          "error | stalls/s, stalled share: "
          "calibration / just before / during | send lag p99 ms | server cores | rows per call measured / "
          "predicted | notes |")


def row(b: int, d: float, r: dict[str, Any], cal: Any) -> str:
    pr = r["predicted"]
    pc, pn, pd, p0 = pr["cal"], pr["cal_stalls_now"], pr["cal_stalls_during"], pr["cal_no_stalls"]
    pp, pt = pr["cal_no_pauses"], pr.get("cal_tiny_pauses")
    each = ", ".join(_ms(x) for x in r.get("p99_runs_s", [r["p99_s"]]))
    tiny = f"{_ms(pt['p99_s'])}, {_pct(pt['err_p99'])}" if pt else "-"
    notes = []
    if r["behind"]:
        notes.append(f"BEHIND (send lag p99 {r['lag_p99_s'] * 1e3:.2f} ms)")
    bad = {k: v for k, v in r["statuses"].items() if k != "200"}
    if bad or r["timed_out"]:
        notes.append(f"non-200 {bad}, unanswered {r['timed_out']}")
    if not pc["stable"]:
        notes.append("predicted unstable")
    if "recal" in pr:
        notes.append(f"calibrated again just before: p50 / p99 {_ms(pr['recal']['p50_s'])} / "
                     f"{_ms(pr['recal']['p99_s'])}, error {_pct(pr['recal']['err_p99'])}")
    mb, now, dur = r["mean_batch_rows"], r["stalls_now"], r["stalls_during"]
    return (f"| {r['target_rps']:,.0f} | {b}/{d:g} | {_ms(pc['p50_s'])} / {_ms(pc['p99_s'])} "
            f"| {_ms(r['p50_s'])} / {_ms(r['p99_s'])} | {_pct(pc['err_p50'])} / {_pct(pc['err_p99'])} "
            f"| {each} | {tiny} "
            f"| {_ms(pn['p99_s'])}, {_pct(pn['err_p99'])} | {_ms(pd['p99_s'])}, {_pct(pd['err_p99'])} "
            f"| {_ms(p0['p99_s'])}, {_pct(p0['err_p99'])} | {_ms(pp['p99_s'])}, {_pct(pp['err_p99'])} "
            f"| {cal.stalls.per_s:.0f}, {cal.stalls.share:.1%} / {now['per_s']:.0f}, {now['share']:.1%} "
            f"/ {dur['per_s']:.0f}, {dur['share']:.1%} "
            f"| {r['lag_p99_s'] * 1e3:.2f} | {r['server_cores']:.2f} "
            f"| {'-' if mb is None else f'{mb:.2f}'} / {pc['mean_batch']:.2f} | {'; '.join(notes)} |")


WHERE = ("| req/s | B/D | server cores | server CPU us/req | model us/req (advisor curve) | rest us/req "
         "| model call ms: server wall / advisor | rows per call | queue wait ms |")


def where_row(b: int, d: float, r: dict[str, Any]) -> str:
    """Where the server's time went in one run: its CPU time per answered request, the part the advisor's
    curve accounts for (its call time at the run's mean batch / that batch), and the rest (HTTP, JSON,
    cast, event loop, thread hops, metrics); the model call's wall time (/metrics) beside the curve's."""
    cpu, rows, call, curve = (r["server_cpu_per_request_s"], r["mean_batch_rows"], r["mean_model_call_s"],
                              r["curve_call_s"])
    model = curve / rows if curve is not None and rows else None
    rest = cpu - model if model is not None else None

    def us(x: float | None) -> str:
        return "-" if x is None else f"{x * 1e6:.0f}"

    return (f"| {r['target_rps']:,.0f} | {b}/{d:g} | {r['server_cores']:.2f} | {us(cpu)} | {us(model)} "
            f"| {us(rest)} | {_ms(call)} / {_ms(curve)} | {'-' if rows is None else f'{rows:.2f}'} "
            f"| {_ms(r['mean_queue_wait_s'])} |")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="0.25,0.5,0.8",
                    help="comma-separated; <= 1: share of the base rate, > 1: req/s [0.25,0.5,0.8]")
    ap.add_argument("--calibration", type=Path, default=None,
                    help="use this calibration file instead of calibrating first (augury advise --calibrate)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load measured per rate [8]")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the rates in turn this many times over on each setting's server; each rate's "
                         "runs of all rounds are taken together (the stalls probed before them: the median "
                         "probe when they disagree) [1]")
    ap.add_argument("--repeats", type=int, default=1,
                    help="measured runs per rate, back to back: the table has their median p50 and p99 and "
                         "each run's p99 (the measurement's own spread) [1]")
    ap.add_argument("--warmup", type=float, default=2.0,
                    help="seconds of load before each rate's measured part, not counted [2]")
    ap.add_argument("--settings", default="advised,64/0",
                    help="server settings B/D (max batch size / max delay ms), comma-separated; "
                         "'advised' is the advisor's [advised,64/0]")
    ap.add_argument("--max-rate", type=float, default=4000.0,
                    help="cap on the base rate (the client alone sent 7,000 req/s on time) [4000]")
    ap.add_argument("--advise-qps", type=float, default=500.0, help="qps given to advise [500]")
    ap.add_argument("--slo-ms", type=float, default=20.0, help="latency_slo_ms given to advise [20]")
    ap.add_argument("--budget", type=float, default=30.0,
                    help="advise's budget_s (as the CLI's default: with calibration, a server of the model "
                         "is measured for its pauses in the last third) [30]")
    ap.add_argument("--connections", type=int, default=512,
                    help="the generator's keep-alive connections at most (opened as needed) [512]")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="the .pickle an earlier --out wrote beside its JSON: its calibration and the "
                         "advisor's measured model, instead of calibrating and measuring again")
    ap.add_argument("--idle-requests", type=int, default=500, help="sequential requests for E [500]")
    ap.add_argument("--server-core", type=int, default=0, help="CPU the server is pinned to; -1: none [0]")
    ap.add_argument("--client-core", type=int, default=1, help="CPU this process is pinned to; -1: none [1]")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds a server has to answer [60]")
    ap.add_argument("--model", choices=sorted(MODELS), default="hgb",
                    help="hgb: a HistGradientBoostingClassifier of 100 iterations; xgb: an XGBClassifier of "
                         "100 trees of depth 6 (the issue's case); both on the same 20 features [hgb]")
    ap.add_argument("--work", type=Path, default=None,
                    help=f"workload and logs folder [{WORK}, or {WORK}-MODEL for another --model]")
    ap.add_argument("--out", type=Path, help="write everything to this JSON file")
    ap.add_argument("--recalibrate", action="store_true",
                    help="calibrate again just before each setting's runs, and predict with that too")
    ap.add_argument("--probe-during", action="store_true",
                    help="also probe the server's core during each run (it counts the server's own work)")
    ap.add_argument("--serve-args", default="", help="more arguments for augury serve")
    ap.add_argument("--stall-probe", type=float, default=2.0,
                    help="seconds of stall probe on the server's core (idle) before each rate [2]")
    ap.add_argument("--client-rt", action=argparse.BooleanOptionalAction, default=True,
                    help="run the generator at SCHED_FIFO priority 1 (chrt), when permitted [on]")
    ap.add_argument("--nice", type=int, default=-15,
                    help="change this process's niceness (and so its servers' and the generator's) by this "
                         "much, when permitted: on a machine shared with other work, their time slices "
                         "otherwise show as stalls of several ms in the server and the client [-15]")
    ap.add_argument("--no-lock", action="store_true",
                    help="do not take /tmp/BENCH_LOCK (taken for each measuring step only)")
    args = ap.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if not args.rates or any(r <= 0 for r in args.rates):
        ap.error("--rates needs positive numbers")
    if args.repeats < 1 or args.rounds < 1:
        ap.error("--repeats and --rounds need 1 or more")

    args.work = args.work or (WORK if args.model == "hgb" else WORK.with_name(f"advise-{args.model}"))
    meta = prepare(args.work, args.model)
    args.model_file, args.path = meta["file"], v1(meta["name"])
    log_dir = args.work / "logs"
    log_dir.mkdir(exist_ok=True)
    lines = (args.work / "bodies.jsonl").read_bytes().splitlines()
    payloads = [request_bytes("POST", args.path, body) for body in lines if body.strip()]

    from augury.advise import advise, service_curve
    from augury.advise.calibrate import calibrate
    from augury.advise.overheads import load

    gen = build_loadgen(args.work)
    lock = not args.no_lock
    if args.client_rt and (not shutil.which("chrt")
                           or subprocess.run(["chrt", "-f", "1", "true"], capture_output=True).returncode):
        print("chrt -f 1 is not permitted here: the generator runs at the normal priority", flush=True)
        args.client_rt = False
    if args.nice:
        try:  # inherited by the calibration's and the measured servers and by the generator
            os.nice(args.nice)
        except PermissionError:
            print(f"cannot change the niceness by {args.nice} (not permitted): left as it is", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    t = time.perf_counter()
    kept = pickle.loads(args.reuse.read_bytes()) if args.reuse else None
    with bench_lock(lock and not args.calibration and not kept):
        cal = kept["calibration"] if kept else load(args.calibration) if args.calibration else calibrate()
    print(f"calibration ({time.perf_counter() - t:.0f} s): {json.dumps(cal.to_dict())}", flush=True)
    t = time.perf_counter()
    if kept:
        cost, advice_doc = kept["cost"], kept["advice"]
        served = kept.get("serving", cal)
    else:
        # on every core, as calibration: the advisor serves the model on the first of them (the
        # server's, core 0 by default) for its pauses, with its client on the others. (Until 2026-12-05
        # this process was pinned to the server's core here, to measure the model there.)
        with bench_lock(lock):
            advice = advise(str(args.work / args.model_file), args.work / "sample.parquet",
                            key_columns=("id",), qps=args.advise_qps, latency_slo_ms=args.slo_ms, cores=1,
                            budget_s=args.budget, overheads=cal)
        pin(0, args.client_core)
        cost, advice_doc, served = advice.measurements.model, advice.to_dict(), advice.measurements.serving
    print(f"pauses used: {served.pauses_said}; model server: {dict(served.model_server)}", flush=True)
    advise_s = time.perf_counter() - t
    if args.out:  # what the predictions need, to predict again offline (--reuse)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".pickle").write_bytes(pickle.dumps({"cost": cost, "calibration": cal,
                                                                   "serving": served,
                                                                   "advice": advice_doc}))
    curve = service_curve(cost, overheads=served)  # with the server's own work: the advisor's capacity
    call = service_curve(cost, serving=False)  # the model call alone
    dyn = advice_doc["dynamic"]["settings"]
    advised = (int(dyn["max_batch_size"] or 64), float(dyn["max_delay_ms"] or 0.0))
    print(f"advise ({advise_s:.0f} s): mode {advice_doc['mode']}; batch 1 call {call.time(1) * 1e3:.3f} ms, "
          f"batch 64 {call.time(64) * 1e3:.3f} ms; per-request overhead "
          f"{cost.request_overhead_s * 1e6:.0f} us (cast and key, in process); "
          f"advised --max-batch-size {advised[0]} --max-delay-ms {advised[1]:g}; max qps per core within "
          f"{args.slo_ms:g} ms: {advice_doc['dynamic'].get('max_qps_per_core_within_slo')}", flush=True)

    settings = parse_settings(args.settings, advised)
    recs = []
    for b, d in settings:
        capacity = curve.capacity(b)
        print(f"== B={b} D={d:g}: advisor capacity {capacity:,.0f} rows/s per core; base rate "
              f"{min(capacity, args.max_rate):,.0f} req/s", flush=True)
        try:
            with bench_lock(lock):
                load0 = os.getloadavg()[0]
                fresh = None
                if args.recalibrate:  # as the first calibration ran: on every core (this process is
                    # pinned to the client's now, and calibrate() pins its server to the first of its cores)
                    mine = os.sched_getaffinity(0)
                    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
                    try:
                        fresh = calibrate()
                    finally:
                        os.sched_setaffinity(0, mine)
                recs.append(run_setting(b, d, cost, args, payloads, capacity, log_dir, served, gen, fresh,
                                        cal))
                if fresh is not None:
                    recs[-1]["recalibration"] = fresh.to_dict()
                recs[-1]["load_average"] = [load0, os.getloadavg()[0]]
            print(f"  load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after", flush=True)
        except Exception as exc:  # report the setting as failed and go on
            print(f"  FAILED: {type(exc).__name__}: {exc}", flush=True)
            recs.append({"max_batch_size": b, "max_delay_ms": d, "error": f"{type(exc).__name__}: {exc}"})

    rows = [row(r["max_batch_size"], r["max_delay_ms"], run, served)
            for r in recs for run in r.get("runs", [])]
    table = "\n".join([HEADER, "|" + "---:|" * 15 + "---|", *rows])
    cal_errs = [run["predicted"]["cal"]["err_p99"] for r in recs for run in r.get("runs", [])]
    print(f"\nOpen-loop Poisson, one-row v1 predicts, {args.duration:g} s per rate; server pinned to CPU "
          f"{args.server_core}, client to CPU {args.client_core}; err = (measured - predicted) / measured; "
          f"E = GET {READY} p50 at idle\n")
    print(table)
    worst = max((abs(x) for x in cal_errs if math.isfinite(x)), default=math.nan)
    print(f"\ncalibrated p99 error: {', '.join(_pct(x) for x in cal_errs)}; worst |error| "
          f"{worst * 100:.0f} % (target: within 25 %)")
    spreads = [max(run["p99_runs_s"]) / min(run["p99_runs_s"]) - 1 for r in recs for run in r.get("runs", [])
               if len(run.get("p99_runs_s", [])) > 1]
    if spreads:
        print(f"measured p99, largest over smallest of each rate's {args.repeats * args.rounds} runs: "
              f"{', '.join(f'+{x * 100:.0f}%' for x in spreads)}")
    runs = [(r["max_batch_size"], r["max_delay_ms"], run) for r in recs for run in r.get("runs", [])]
    where = "\n".join([WHERE, "|" + "---:|" * 9, *(where_row(*x) for x in runs)])
    idle = [f"- B={r['max_batch_size']} D={r['max_delay_ms']:g}: E {_ms(r['idle']['ready_p50_s'])} ms; "
            f"one-row predict p50 {_ms(r['idle']['predict_p50_s'])} ms (advisor, extra_s=E: "
            f"{_ms(r['idle']['predicted_p50_s'])} ms); server CPU per predict "
            f"{r['idle']['server_cpu_per_predict_s'] * 1e6:.0f} us; model call (wall) "
            f"{r['idle']['model_call_s'] * 1e6:.0f} us, advisor's batch-1 call {call.time(1) * 1e6:.0f} us; "
            f"rest {(r['idle']['server_cpu_per_predict_s'] - call.time(1)) * 1e6:.0f} us"
            for r in recs if "idle" in r]
    print("\nWhere the server's time goes (server CPU time and /metrics over each run):\n")
    print(where)
    print("\nIdle, one request at a time:\n" + "\n".join(idle))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "argv": sys.argv, "python": platform.python_version(), "cpus": os.cpu_count(), "workload": meta,
            "calibration": cal.to_dict(), "calibration_stalls": list(cal.stalls.durations_s),
            "serving": served.to_dict(),
            "latency_samples": {p.batch_size: list(p.samples) for p in cost.latency},
            "advise_s": advise_s, "advice": advice_doc, "settings": recs, "table": table,
            "where": where, "idle": idle},
            indent=2, default=str))
        print(f"\nresults -> {args.out}")
    return 1 if any("error" in r for r in recs) else 0


if __name__ == "__main__":
    sys.exit(main())
