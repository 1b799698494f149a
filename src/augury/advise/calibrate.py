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
send time and its answer's arrival, timed by the kernel (`timed_conn.TimedConn`), show the requests the
server took longer over than usual, and how the number of those a second grows with the rate says how
many come with each request. (The server's collector and its other work come with its requests, so they
are drawn per request, where the stalls below follow the clock.)

`stalls.probe` measures how often and how long the server's core is taken from it by other work, with
the servers idle, three times (`PROBES`: before the first server's load, between the two, after the
second's), `STALL_PROBE_S` in all: the `stalls` the simulation lays over the worker's time. (They
replaced a spread taken from the light phase's latencies divided by their mean: on a busy machine a few
stalls made that mean 7 times the median, and the spread put predictions 40-640 % off; issue 15.) Three
probes tell whether the machine's load changed while calibration ran (`agree`); if it did, up to two
more are taken, the median probe's stalls are kept, and the calibration's `notes` say so
(`stalls.settled`).

The figures are the server's CPU time, so a busy client or machine changes them little; they are saved
to a small JSON file (`overheads.default_path()`, or the path given) that later advice reads.
"""

from __future__ import annotations

import asyncio
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from augury.advise import load, server
from augury.advise.load import PHASE_S, Measured, Phase, request_bytes
from augury.advise.overheads import ServingOverheads
from augury.advise.stalls import agree, pauses_from, probe, settled
from augury.errors import MissingExtraError

#: seconds of the stall probes together (shortened like the warm-up with shorter phases, each to at
#: least 0.3 s), in `PROBES` probes: before, between and after the servers' load. Probes that do not
#: `stalls.agree` saw the machine change, and more are taken, up to `MAX_PROBES` (at most 2 s more).
STALL_PROBE_S = 3.0
PROBES = 3
MAX_PROBES = 5
NAME = "calib"
MODEL_REF = "augury_calibration_model:score"
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
    core, client = server.cores()
    probe_s = max(STALL_PROBE_S / PROBES * min(phase_s / PHASE_S, 1.0), 0.3)
    with tempfile.TemporaryDirectory(prefix="augury-calibrate-") as tmp:
        folder = Path(tmp)
        (folder / "augury_calibration_model.py").write_text(_MODEL, encoding="utf-8")
        # both servers start at once (their start, mostly imports, is over a second each), then are
        # measured one after the other: the one waiting is idle meanwhile
        with server.started(MODEL_REF, NAME, folder, _PREDICT, python_path=[tmp]) as first, \
                server.started(MODEL_REF, NAME, folder, _PREDICT, ("--inline-below-ms", "0"),
                               python_path=[tmp]) as second, server.client_cores(client):
            for s in (first, second):
                server.wait_ready(s)
            probes = [probe(probe_s, core)]
            inline = _measure(first, core, phase_s)
            server.stop(first.proc)
            probes.append(probe(probe_s, core))
            hop = _measure(second, core, phase_s)
            probes.append(probe(probe_s, core))
            while not agree(probes) and len(probes) < MAX_PROBES:
                probes.append(probe(probe_s, core))
    stalls, changed = settled(probes)
    notes = (f"the machine's load changed during calibration (probes before, between and after the "
             f"servers' load, then again): {changed}. Calibrate again when the machine is as it will be "
             f"when serving.",) if changed else ()
    per_request, batch_inline, wake_inline = _fit(inline.phases)
    per_request_hop, batch_hop, wake_hop = _fit(hop.phases)
    details = {f"{path}_{name}_{what}": value
               for path, run in (("inline", inline), ("hop", hop))
               for name, phase in zip(("light", "heavy", "full"), run.phases, strict=True)
               for what, value in (("rest_us", phase.rest_s * 1e6), ("rows_per_call", phase.rows_per_call),
                                   ("busy", phase.busy))}
    details["per_request_hop_us"] = per_request_hop * 1e6
    details.update({f"stall_probe_{i + 1}_share": p.share for i, p in enumerate(probes)})
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
                            stalls=stalls, pauses_inline=pauses["inline"], pauses_hop=pauses["hop"],
                            notes=notes)


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


def _measure(served: server.Served, core: int | None, phase_s: float) -> Measured:
    """Pin `served` (answering) to `core`, and run the phases."""
    process = server.pinned(served, core)
    return asyncio.run(load.phases(served.port, process, phase_s, _PREDICT))
