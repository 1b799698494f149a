"""The pauses of a server of the model advised on, measured on a real ``augury serve`` of it.

Calibration measures the server's own pauses on a tiny model (`augury.advise.calibrate`). The pauses
that matter on a quiet machine are the model's server's own: back to back on the project's 2-core VM,
the calibration server showed none and a server of a 100-tree HistGradientBoosting model paused on
0.7-1.2 % of its requests, 0.4-0.6 ms (issue 15, BENCHMARKS.md). So, when calibration is available,
`model_pauses` serves MODEL itself as calibration serves its tiny model (one worker, native thread pools
capped at one thread, pinned to one core with this process's client on the others) and runs the same
two timed open-loop phases of one-row predicts, rows taken in turn from DATA: a light rate (`LIGHT_RATE`,
or less for a slower model: `LIGHT_BUSY` of the core) and a heavy one (`load.HEAVY_BUSY` of what the
light phase's CPU per request allows). `stalls.pauses_from` reads the pauses from them, as calibration
does, less the core's stalls probed on the idle server's core just before and just after. They replace
the calibration server's: they hold the server's own pauses too, and the model's. If the two probes
disagree (`stalls.agree`: the machine's load changed meanwhile), the pauses are not used: in the first
benchmark series with them (2026-12-05), probes of 0.06 % and 2.08 % stalled framed 5.7 % of requests
paused, p50 1.6 ms, and the predicted p99 was 5.5-8.3 ms against 0.8-4.2 ms measured a minute later
(-98 to -868 %), where the calibration server's pauses gave -17 to +74 %.

The same server, loaded by `load.FULL_CONCURRENCY` closed-loop clients for `FULL_S` (full batches, as
calibration's last phase), gives **the server's own work per request for this model**: its CPU per
request there, less the model's call at those rows per call as the advisor measured it (`model_call`),
less the calibrated per-batch work. It replaces the calibration's figure, which a tiny model's server
gave. It is what sets a core's capacity: on the 2-core VM an XGBoost model's server did 44-51 us of
its own work per request where the calibration said 26-33, and with the calibration's figure the
advisor said one core holds a 20 ms p99 up to 27,030 req/s, where the real server's p99 was 24 ms at
13,825 (issue 15, 2026-12-05, BENCHMARKS.md).

They are not measured (or not used), and the calibration server's are used, with the reason said, when
there is no calibration; for a Python function model (``module:function``: imported in this process,
which a server in another process may not import alike); for a model whose one-row call takes over
`MAX_CALL_S` (its own call-to-call spread, which the simulation draws already from the measured calls,
would be counted twice, and pauses of a few tenths of a millisecond matter little beside it); when the
budget leaves too little time; when the server does not start or answer 200; and when the machine's
load changed while they were measured.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime
from datetime import time as daytime
from pathlib import Path
from typing import Any

import pyarrow as pa

from augury.advise import load, server
from augury.advise.load import LIGHT_RATE, CalibrationError, Phase, Timed, request_bytes
from augury.advise.overheads import ServingOverheads
from augury.advise.stalls import MIN_PAUSE_S, excess, pauses_from, probe, settled
from augury.schema import Schema

#: a one-row call longer than this is not timed for pauses (above).
MAX_CALL_S = 2e-3
#: the light phase's share of the core at most (a slower model gets a lower rate than `LIGHT_RATE`).
LIGHT_BUSY = 0.15
#: each phase's seconds at most and at least; the warm-up's share of a phase; each stall probe's seconds.
PHASE_S = 2.0
MIN_PHASE_S = 0.6
WARMUP_SHARE = 0.25
PROBE_S = 0.5
#: the full-batch phase's seconds (after the warm-up).
FULL_S = 0.5
#: the seconds the step needs at the least (a server's start, 1.2-1.8 s for a 100-tree HistGradientBoosting
#: or XGBoost model on the 2-core VM on 2026-12-05, the probes, the full-batch phase and two short
#: phases: 3.5 s after the start), and the advisor's budget's share it gets.
MIN_SERVED_S = 6.0
SERVED_SHARE = 0.31
#: rows of DATA sent in turn.
ROWS = 64
NAME = "advised"
#: said when the calibration server's pauses are used.
FALLBACK = "the calibration server's (a tiny model)"


def model_pauses(model_ref: str, rows: pa.RecordBatch, schema: Schema, call_s: float, cpu_s: float,
                 serving: ServingOverheads, deadline: float,
                 model_call: Callable[[int], float] | None = None) -> ServingOverheads:
    """`serving` with the pauses of a real server of `model_ref` measured under load until `deadline`
    (monotonic), rows from `rows` (conformed to `schema`), and with `model_call` (the model's call time
    by batch size, as the advisor measured it) the server's own work per request for this model; or
    `serving` as it is, saying why not. `call_s` is the model's one-row call and `cpu_s` the server's
    CPU per request at one row (the advisor's figures), which set the light phase's rate. With the
    built-in estimates (no calibration), `serving` as it is: they have no pauses."""
    if not serving.calibrated:
        return serving
    why = _unservable(model_ref, call_s)
    if why:
        return serving.noted(f"{FALLBACK}: {why}")
    predicts = _predicts(rows, schema)
    if not predicts:
        return serving.noted(f"{FALLBACK}: no row of DATA could be sent to a server as JSON")
    ref = str(Path(model_ref).resolve())
    try:
        return _measured(ref, predicts, cpu_s, serving, deadline, model_call)
    except (CalibrationError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return serving.noted(f"{FALLBACK}: a server of this model could not be measured ({_one_line(exc)})")


def why_not(model_ref: str | os.PathLike[str], seconds: float) -> str:
    """Why a server of `model_ref` is not measured in `seconds` ("" if it is): a Python function model,
    or too little time. Known before the model is measured (the advisor's budget is shared out by it)."""
    ref = str(model_ref)
    if ":" in ref and not os.path.exists(ref):
        return ("MODEL is a Python function (module:function), imported in this process; a server in "
                "another process may not import it alike")
    if seconds < MIN_SERVED_S:
        return (f"the budget leaves {seconds:.1f} s for a server of this model, which needs about "
                f"{MIN_SERVED_S:g} s (a --budget of {math.ceil(MIN_SERVED_S / SERVED_SHARE)} s or more "
                f"leaves that)")
    return ""


def _unservable(model_ref: str, call_s: float) -> str:
    if why := why_not(model_ref, math.inf):
        return why
    if call_s > MAX_CALL_S:
        return (f"the model's one-row call ({call_s * 1e3:.2g} ms) is long beside the pauses timed (0.3 ms "
                f"and more); its own spread is drawn from its measured calls")
    try:
        import psutil  # noqa: F401
    except ImportError:
        return "psutil is not installed (pip install 'augury[advise]')"
    return ""


def _predicts(rows: pa.RecordBatch, schema: Schema) -> list[bytes]:
    """One-row v1 predicts of the first `ROWS` rows of `rows` that JSON can carry (no null, no NaN)."""
    out: list[bytes] = []
    names = [n for n in schema.names if n in rows.schema.names]
    for row in rows.select(names).slice(0, 4 * ROWS).to_pylist():
        if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in row.values()):
            continue
        body = json.dumps({"instances": [row]}, default=_json).encode()
        out.append(request_bytes("POST", f"/v1/models/{NAME}:predict", body))
        if len(out) == ROWS:
            break
    return out


def _json(value: Any) -> Any:
    if isinstance(value, datetime | date | daytime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _measured(ref: str, predicts: list[bytes], cpu_s: float, serving: ServingOverheads,
              deadline: float, model_call: Callable[[int], float] | None = None) -> ServingOverheads:
    core, client = server.cores()
    started_at = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="augury-advise-serve-") as tmp, \
            server.started(ref, NAME, Path(tmp), predicts[0]) as served, server.client_cores(client):
        # what the phases need at the least, after the server answers
        need = 2 * PROBE_S + 2 * MIN_PHASE_S * (1 + WARMUP_SHARE) + FULL_S + 0.5
        server.wait_ready(served, max(deadline - time.monotonic() - need, 0.1))
        start_s = time.monotonic() - started_at
        phase_s = min(PHASE_S, (deadline - time.monotonic() - 2 * PROBE_S - FULL_S - 0.5)
                      / (2 + WARMUP_SHARE))
        if phase_s < MIN_PHASE_S:
            raise CalibrationError(f"the budget left {max(deadline - time.monotonic(), 0):.1f} s after "
                                   f"the server started ({start_s:.1f} s); a longer --budget leaves more")
        process = server.pinned(served, core)
        before = probe(PROBE_S, core)
        light_rate = min(LIGHT_RATE, LIGHT_BUSY / max(cpu_s, 1e-6))
        full, light, light_timed, heavy, heavy_timed = asyncio.run(
            _phases(served.port, process, predicts, light_rate, phase_s))
        after = probe(PROBE_S, core)
    stalls, changed = settled([before, after])
    pauses = pauses_from([(light_timed.sent_s, light_timed.received_s, light.busy),
                          (heavy_timed.sent_s, heavy_timed.received_s, heavy.busy)], stalls)
    details = (("light_rate", light.requests / max(light.wall_s, 1e-9)),
               ("heavy_rate", heavy.requests / max(heavy.wall_s, 1e-9)),
               ("light_busy", light.busy), ("heavy_busy", heavy.busy),
               ("heavy_cpu_per_request_us", heavy.cpu_s / max(heavy.requests, 1) * 1e6),
               ("heavy_rows_per_call", heavy.rows_per_call),
               ("full_cpu_per_request_us", full.cpu_s / max(full.requests, 1) * 1e6),
               ("full_rows_per_call", full.rows_per_call), ("phase_s", phase_s), ("start_s", start_s),
               ("stalled_share_before", before.share), ("stalled_share_after", after.share),
               ("pauses_per_request", pauses.per_request),
               # the share of each phase's requests held (before the stalls and the slope): a share that
               # falls as the rate grows is pauses that follow the clock, not the requests
               ("light_held_share", _held(light_timed)), ("heavy_held_share", _held(heavy_timed)),
               ("timed_by_the_kernel", float(light_timed.stamped and heavy_timed.stamped)))
    said = (f"measured on a server of this model ({pauses.per_request:.2%} of requests"
            + (f", p50 {_median(pauses.durations_s) * 1e3:.2f} ms" if pauses.durations_s else "")
            + f"; {light.requests:,} requests at {details[0][1]:,.0f} and {heavy.requests:,} at "
              f"{details[1][1]:,.0f} req/s)")
    if changed:  # what the phases saw was the machine's change as much as the server
        return serving.noted(f"{FALLBACK}: the machine's load changed while a server of this model was "
                             f"measured (before and after: {changed}), so its pauses "
                             f"({pauses.per_request:.2%} of requests) were not used", details)
    measured = serving.with_model_pauses(pauses, said, details)
    own = own_work(full, model_call, serving) if model_call is not None else None
    if own is None:
        return measured
    return measured.with_model_work(own, f"{own * 1e6:.0f} us a request beyond the model, measured at "
                                         f"{full.rows_per_call:.0f} rows a call on a server of this model "
                                         f"(calibration: {serving.per_request_s * 1e6:.0f} us)")


def own_work(full: Phase, model_call: Callable[[int], float], serving: ServingOverheads) -> float | None:
    """The server's own work per request for this model, from its full-batch phase: its CPU per request,
    less the model's call at those rows per call (as the advisor measured it, so that the simulation's
    sum of the two is the server's CPU) and the calibrated per-batch work; None when the phase answered
    too few requests to tell (under 200) or batched too little (under 4 rows a call: wake-ups, which
    the calibrated figure holds apart, would be counted in it)."""
    rows = full.rows_per_call
    if full.requests < 200 or rows < 4:
        return None
    b = max(round(rows), 1)
    call = model_call(b)
    work = full.cpu_s / full.requests - (call + serving.per_batch_s(call)) / rows  # the server's path
    return max(work, 0.0)


async def _phases(port: int, process: load.CpuTimed, predicts: list[bytes], light_rate: float,
                  phase_s: float) -> tuple[Phase, Phase, Timed, Phase, Timed]:
    """A closed-loop warm-up, the full-batch phase, then the light and the heavy open-loop phases (the
    heavy one slower again if the server sheds)."""
    await load.closed_loop(port, load.CONCURRENCY, phase_s * WARMUP_SHARE, process, predicts)
    full = await load.closed_loop(port, load.FULL_CONCURRENCY, FULL_S, process, predicts)
    return (full, *await load.light_then_heavy(port, process, light_rate, phase_s, predicts, tries=2))


def _held(timed: Timed) -> float:
    over, _ = excess(timed.sent_s, timed.received_s)
    return float((over > MIN_PAUSE_S).mean()) if len(over) else 0.0


def _one_line(exc: BaseException) -> str:
    """The error in one line: its first and last lines (a server's log tail ends with its error)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    text = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return text if len(text) <= 300 else text[:297] + "..."


def _median(values: tuple[float, ...]) -> float:
    return sorted(values)[len(values) // 2]
