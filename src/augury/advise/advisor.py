"""`advise`: measure the model, the store and the traffic on this machine, then recommend.

Steps and their share of the time budget: load the model and read the sample and the traffic log (not
budgeted: the inputs must be read, and a bad one fails before anything is measured); model latency and
throughput (until 65 % of the budget is spent); scoring more of the sample for the store measurement (to
75 %) and the store itself (to 85 %); the rest goes to the simulations of `recommend`, which take well
under a second.

With calibration (and a model a server can be started for, in time: `served.why_not`), a real
``augury serve`` of the model is loaded for its pauses too (`served.model_pauses`: the server's start,
2-3 s for a 100-tree HistGradientBoosting model on the 2-core VM, then two phases of up to 2 s): the
steps' shares are then 50, 57 and 64 %, and the server has until 95 % (`served.SERVED_SHARE`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import pyarrow as pa

from augury.advise.advice import Advice
from augury.advise.budget import Budget, ModelThread
from augury.advise.capacity import service_curve
from augury.advise.catalogue import Catalogue, read_catalogue
from augury.advise.measure import measure_model, rss_bytes
from augury.advise.measurements import CatalogueStats, Goals, Measurements, TrafficStats
from augury.advise.overheads import ServingOverheads, resolve
from augury.advise.recommend import recommend
from augury.advise.served import FALLBACK, SERVED_SHARE, model_pauses, why_not
from augury.advise.storecost import MAX_ROWS, measure_store
from augury.advise.traffic import column_names, read_traffic
from augury.errors import ConfigError
from augury.models import Model, load_model, predict_checked

#: the default time budget for measuring, in seconds.
DEFAULT_BUDGET_S = 30.0
#: the budget's share spent when the model's measuring, scoring more of the sample and the store's end;
#: with a server of the model to measure too, it has until 95 %.
SHARES = (0.65, 0.75, 0.85)
SHARES_SERVED = (0.5, 0.57, 0.64)


def advise(model_ref: str, data: str | os.PathLike[str], *, key_columns: Sequence[str] = (),
           traffic: str | os.PathLike[str] | None = None, qps: float | None = None,
           latency_slo_ms: float | None = None, max_staleness_s: float | None = None,
           catalogue_rows: int | None = None, cores: int | None = None,
           budget_s: float = DEFAULT_BUDGET_S, core_cost: float | None = None,
           store_cost: float | None = None,
           overheads: ServingOverheads | str | os.PathLike[str] | None = None) -> Advice:
    """Measure `model_ref` on the sample `data` (and the traffic log `traffic`) and recommend static,
    dynamic or hybrid serving for the given goals. `cores` defaults to this machine's core count;
    `core_cost` and `store_cost` are the prices of a core-hour and a GB-month of store (defaults in
    `facts`). `overheads`: the server's own costs, or the path of a calibration file; by default the
    file `augury advise --calibrate` wrote (`overheads.default_path()`) if there, else built-in estimates.

    ConfigError for a goal that is not a positive number; InputError for unusable data or log, or an
    unreadable calibration file; ModelLoadError for a model that cannot be loaded."""
    _check(qps=qps, latency_slo_ms=latency_slo_ms, max_staleness_s=max_staleness_s,
           catalogue_rows=catalogue_rows, cores=cores, budget_s=budget_s, core_cost=core_cost)
    if store_cost is not None and not (math.isfinite(store_cost) and store_cost >= 0):
        raise ConfigError(f"store_cost must be 0 or more, not {store_cost!r}")
    serving = overheads if isinstance(overheads, ServingOverheads) else resolve(overheads)
    budget = Budget(budget_s)
    before = rss_bytes()
    started = time.perf_counter()
    model = load_model(model_ref, threads=1)
    load_s = time.perf_counter() - started
    after = rss_bytes()
    keys = tuple(key_columns)
    by_key = traffic is not None and bool(keys) and set(keys) <= set(column_names(traffic))
    sample = read_catalogue(data, model.info.inputs, keys, hashes=traffic is not None and not by_key)
    scorable = sample.rows_read - sample.rejected
    if catalogue_rows is not None and catalogue_rows < scorable:
        raise ConfigError(f"catalogue_rows ({catalogue_rows:,}) is smaller than the sample "
                          f"({scorable:,} rows); give the whole catalogue's size")
    total = catalogue_rows or scorable
    stats = CatalogueStats(scorable, total, len(sample.key_set) if sample.held_all else scorable,
                           ", ".join(keys) or "feature hash", sample.rejected)
    traffic_stats = (read_traffic(traffic, model.info.inputs, keys, sample, total)
                     if traffic is not None else None)
    why = why_not(model_ref, budget_s * SERVED_SHARE) if serving.calibrated else ""
    shares = SHARES_SERVED if serving.calibrated and not why else SHARES
    thread = ModelThread(threads=1)
    try:
        rss = after - before if before is not None and after is not None else None
        measured = measure_model(model, sample.rows, thread, budget.until(shares[0]), rss=rss, load_s=load_s)
        outputs = _score_more(model, sample, measured.outputs, thread, measured.cost.throughput_rows_s,
                              budget.until(shares[1]))
    finally:
        thread.close()
    store = measure_store(sample.keys, outputs, model.info.outputs, model.info.version,
                          budget.until(shares[2]))
    if why:
        serving = serving.noted(f"{FALLBACK}: {why}")
    elif serving.calibrated:
        one = service_curve(measured.cost, overheads=serving)
        call_s = min(measured.cost.latency, key=lambda p: p.batch_size).p50_s
        model_call = service_curve(measured.cost, jitter=False, serving=False).time
        serving = model_pauses(str(model_ref), sample.rows, model.info.inputs, call_s,
                               one.time(1) + serving.per_wake_s(call_s), serving,
                               budget.until(SHARES_SERVED[-1] + SERVED_SHARE), model_call)
    measurements = Measurements(measured.cost, stats, store, _noted(traffic_stats, sample), budget_s,
                                budget.spent(), serving)
    goals = Goals(qps, latency_slo_ms, max_staleness_s, cores or os.cpu_count() or 1, core_cost, store_cost)
    advice = recommend(measurements, goals)
    return replace(advice, measurements=replace(advice.measurements, spent_s=budget.spent()))


def _check(**values: float | None) -> None:
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or value <= 0:
            raise ConfigError(f"{name} must be a positive number, not {value!r}")
    for name in ("catalogue_rows", "cores"):
        value = values[name]
        if value is not None and not float(value).is_integer():
            raise ConfigError(f"{name} must be a whole number, not {value!r}")


def _score_more(model: Model, sample: Catalogue, outputs: pa.RecordBatch | None, thread: ModelThread,
                throughput: float, deadline: float) -> pa.RecordBatch | None:
    """Predictions for more of the sample's rows (up to the store measurement's size), if the model can
    score them before `deadline`; else the outputs already made."""
    n = min(sample.rows.num_rows, MAX_ROWS)
    have = outputs.num_rows if outputs is not None else 0
    left = deadline - time.monotonic()
    if n <= have or thread.stuck or left <= 0:
        return outputs
    n = min(n, int(0.8 * left * throughput))
    if n <= have:
        return outputs
    rows = sample.rows.slice(0, n)
    try:
        return thread.run(lambda: predict_checked(model, rows), left)
    except TimeoutError:
        return outputs


def _noted(traffic: TrafficStats | None, sample: Catalogue) -> TrafficStats | None:
    if traffic is None or sample.held_all:
        return traffic
    note = f"only the sample's first {len(sample.key_set):,} keys were matched against the log"
    return replace(traffic, notes=(*traffic.notes, note))
