"""Live drift: windows of served inputs and predictions, by source, compared with the reference.

`DriftWatch` is a `PredictionObserver` (it runs on the monitor's thread, `monitor.tap`). It keeps the
served rows of the current window apart by source (``static``: answered from the store; ``dynamic``:
computed), and closes the window after `Window.requests` requests or `Window.seconds` seconds, whichever
comes first. Then, for each source with at least `Window.min_rows` rows, and each column the reference
profiled (`monitor.reference`): the PSI of the window against the reference, over the reference's own
bins (numeric) or values (categorical), with verify's `psi` and `categorical_psi`, so a PSI means what it
means at publish time. For the predictions also the share of each value of a categorical output (the
classes a classifier gives) and the 10th, 50th and 90th percentiles of a numeric one (a score).

A column whose PSI passes its limit (`MonitorConfig.psi_limit`) for `MonitorConfig.alert_windows` windows
in a row fires the ``drift`` alert for that column and source (`monitor.alerts`); a compared window under
the limit resolves it. A window too small to compare changes nothing.

Key-only lookups carry no features: a static server watches its predictions only (a hybrid one sees the
features of the examples its store answered). The values exported are the last window's, per process
(each worker of ``--workers N`` watches the requests it serves).

Cost: per chunk of requests the observer's thread converts the served rows into one NumPy matrix and
each prediction column into an array (or value counts); at the end of a window each column is binned
once (`searchsorted`): ~0.5 µs per request and ~1.8 ms per window of 1,000 requests of 20 features, on
the observer's thread. What the server pays for it is measured in BENCHMARKS.md.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from augury.keys import key_text
from augury.monitor.alerts import AlertBook
from augury.monitor.config import MonitorConfig
from augury.monitor.reference import Reference
from augury.monitor.tap import Observation, yield_gil
from augury.verify.profile import CategoricalProfile, NumericProfile, Profile
from augury.verify.psi import bin_counts, categorical_psi, psi

SOURCES = ("static", "dynamic")
QUANTILES = (0.1, 0.5, 0.9)


class _Columns:
    """One source's values in the current window, kept column by column as they arrive: NumPy arrays for
    the columns the reference has as numbers, value counts for the others. Nothing of a request is kept
    past the observer's call: a window holds no request's objects, only numbers."""

    def __init__(self) -> None:
        self.rows = 0
        self.numbers: dict[str, list[np.ndarray]] = {}
        self.counts: dict[str, collections.Counter[Any]] = {}

    def add(self, reference: Profile, names: Sequence[str], columns: Sequence[Any], rows: int) -> None:
        """Add `rows` rows whose column ``names[j]`` holds the values ``columns[j]``."""
        self.rows += rows
        for name, values in zip(names, columns, strict=True):
            ref = reference.columns.get(name)
            if isinstance(ref, NumericProfile):
                self.numbers.setdefault(name, []).append(_floats(values))
            elif isinstance(ref, CategoricalProfile):
                self.counts.setdefault(name, collections.Counter()).update(values)

    def floats(self, name: str) -> np.ndarray:
        """The finite values of numeric column `name`."""
        parts = self.numbers.get(name)
        x = np.concatenate(parts) if parts else np.empty(0)
        return x[np.isfinite(x)]

    def shares(self, name: str) -> dict[str, float]:
        """The share of each value (as `key_text`) of categorical column `name`."""
        counts: dict[str, int] = {}
        for v, c in self.counts.get(name, collections.Counter()).items():  # (key_text per distinct value)
            if v is not None:
                k = key_text([v])
                counts[k] = counts.get(k, 0) + c
        total = sum(counts.values())
        return {k: c / total for k, c in counts.items()} if total else {}


@dataclass
class _Window:
    """One source's inputs and outputs in the current window."""

    inputs: _Columns = field(default_factory=_Columns)
    outputs: _Columns = field(default_factory=_Columns)


@dataclass(frozen=True)
class WindowResult:
    """What one closed window of one source measured."""

    rows: int
    psi: Mapping[tuple[str, str], float]  # (kind, column) -> PSI; kind is "input" or "output"
    shares: Mapping[tuple[str, str], float]  # (column, value) -> share, categorical outputs
    quantiles: Mapping[tuple[str, float], float]  # (column, q) -> value, numeric outputs


class DriftWatch(Collector):
    """Windows of served data compared with `reference` (see the module docstring); `inputs` are the
    names of the served rows' columns, in order (the model's input schema; None: no features served)."""

    def __init__(self, reference: Reference, inputs: Sequence[str] | None, config: MonitorConfig,
                 alerts: AlertBook) -> None:
        self.reference = reference
        self.config = config
        self.alerts = alerts
        self._inputs = list(inputs or ())
        self._windows = {s: _Window() for s in SOURCES}
        self._requests = 0
        self._opened = time.monotonic()
        self._over: dict[tuple[str, str, str], int] = {}  # (kind, source, column) -> windows in a row
        self._last: dict[str, WindowResult] = {}
        self._closed = dict.fromkeys(SOURCES, 0)
        self._lock = threading.Lock()  # guards `_last` and `_closed` between the thread and scrapes

    def observe(self, observations: Sequence[Observation]) -> None:
        rows: dict[str, list[Sequence[Any]]] = {s: [] for s in SOURCES}
        values: dict[str, list[Mapping[str, Any]]] = {s: [] for s in SOURCES}
        for obs in observations:
            self._requests += 1
            for example, answer in zip(obs.examples, obs.answers, strict=False):
                if answer is None:
                    continue
                source = answer.provenance.get("source", "")
                if source not in values:
                    continue
                if example.row is not None:
                    rows[source].append(example.row)
                values[source].append(answer.values)
        ref_in, ref_out = self.reference.inputs, self.reference.predictions
        for source in SOURCES:
            window = self._windows[source]
            if rows[source] and ref_in is not None:
                matrix = _matrix(rows[source])  # one conversion for every numeric feature at once
                columns = (list(matrix) if matrix is not None
                           else [[r[j] for r in rows[source]] for j in range(len(self._inputs))])
                window.inputs.add(ref_in, self._inputs, columns, len(rows[source]))
            if values[source] and ref_out is not None:
                names = list(ref_out.columns)
                window.outputs.add(ref_out, names, [[v.get(n) for v in values[source]] for n in names],
                                   len(values[source]))
        window_cfg = self.config.window
        if self._requests >= window_cfg.requests or time.monotonic() - self._opened >= window_cfg.seconds:
            self.close_window()

    def close_window(self) -> dict[str, WindowResult]:
        """Compare the current window with the reference, say what changed, and open the next one."""
        results: dict[str, WindowResult] = {}
        for source, window in self._windows.items():
            if max(window.inputs.rows, window.outputs.rows) >= self.config.window.min_rows:
                results[source] = self._measure(window)
        self._windows = {s: _Window() for s in SOURCES}
        self._requests = 0
        self._opened = time.monotonic()
        for source, result in results.items():  # (alerts first: a scrape that counts the window sees them)
            for (kind, column), value in result.psi.items():
                self._judge(kind, source, column, value)
        with self._lock:
            self._last.update(results)
            for source in results:
                self._closed[source] += 1
        return results

    def _measure(self, window: _Window) -> WindowResult:
        eps = self.config.drift.epsilon
        found: dict[tuple[str, str], float] = {}
        shares: dict[tuple[str, str], float] = {}
        quantiles: dict[tuple[str, float], float] = {}
        enough = self.config.window.min_rows
        for kind, reference, columns in (("input", self.reference.inputs, window.inputs),
                                         ("output", self.reference.predictions, window.outputs)):
            if reference is None or columns.rows < enough:
                continue
            for name, ref in reference.columns.items():
                yield_gil()
                if isinstance(ref, NumericProfile):
                    finite = columns.floats(name)
                    if finite.size and ref.fractions:
                        counts = bin_counts(finite, ref.edges)
                        found[(kind, name)] = psi(ref.fractions, (counts / finite.size).tolist(), eps)
                        if kind == "output":
                            qs = np.quantile(finite, QUANTILES).tolist()
                            quantiles.update({(name, q): v for q, v in zip(QUANTILES, qs, strict=True)})
                elif isinstance(ref, CategoricalProfile) and not ref.truncated and ref.count:
                    got = columns.shares(name)
                    if got:
                        found[(kind, name)] = categorical_psi(ref.shares, got, eps)
                    if kind == "output":
                        shares.update({(name, k): got.get(k, 0.0) for k in ref.shares})
        return WindowResult(max(window.inputs.rows, window.outputs.rows), found, shares, quantiles)

    def _judge(self, kind: str, source: str, column: str, value: float) -> None:
        limit = self.config.psi_limit(column)
        if not self.config.drift.enabled:
            return
        key = (kind, source, column)
        over = self._over[key] = self._over.get(key, 0) + 1 if value > limit else 0
        firing = over >= self.config.alert_windows
        what = "feature" if kind == "input" else "prediction column"
        message = (f"{source} {what} {column!r} drifted from the reference ({self.reference.source}): PSI "
                   f"{value:.3f} > {limit:g}" if firing else
                   f"{source} {what} {column!r} is back near the reference: PSI {value:.3f} <= {limit:g}")
        if firing or over == 0:
            self.alerts.update("drift", {"kind": kind, "source": source, "column": column}, firing,
                               value, limit, message)

    def last(self) -> dict[str, WindowResult]:
        """The last closed window of each source that had one."""
        with self._lock:
            return dict(self._last)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            last, closed = dict(self._last), dict(self._closed)
        psi_family = GaugeMetricFamily(
            "augury_drift_psi", "PSI of the last window of served data against the reference, by kind "
            "(input: a feature; output: a prediction column), source (static or dynamic) and column.",
            labels=["kind", "source", "column"])
        rows = GaugeMetricFamily("augury_drift_window_rows", "Rows in the last compared window, by source.",
                                 labels=["source"])
        windows = CounterMetricFamily("augury_drift_windows", "Windows of served data compared with the "
                                      "reference, by source.", labels=["source"])
        shares = GaugeMetricFamily("augury_prediction_share", "Share of each value of a categorical "
                                   "prediction column (a classifier's classes) in the last window, by "
                                   "source.",
                                   labels=["source", "column", "value"])
        quantiles = GaugeMetricFamily("augury_prediction_quantile", "Percentiles of a numeric prediction "
                                      "column (a score) in the last window, by source.",
                                      labels=["source", "column", "quantile"])
        for source, count in closed.items():
            windows.add_metric([source], float(count))
        for source, result in last.items():
            rows.add_metric([source], float(result.rows))
            for (kind, column), value in result.psi.items():
                psi_family.add_metric([kind, source, column], value)
            for (column, label), share in result.shares.items():
                shares.add_metric([source, column, label], share)
            for (column, q), value in result.quantiles.items():
                quantiles.add_metric([source, column, f"{q:g}"], value)
        yield from (psi_family, rows, windows, shares, quantiles)


def _matrix(rows: list[Sequence[Any]]) -> np.ndarray | None:
    """The rows as one float64 matrix, a feature per row, when every value is a number (None otherwise:
    text, booleans): a window of 1,000 rows of 20 features is compared in 1.8 ms instead of 3.2 ms."""
    try:
        matrix = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if matrix.ndim != 2 or any(isinstance(v, bool) for v in rows[0]):
        return None
    return np.ascontiguousarray(matrix.T)  # (a feature per row: each is read whole)


def _floats(values: Any) -> np.ndarray:
    """`values` as float64 (None as NaN; values that are no numbers: none, as for a reference that does
    not fit the served model)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return np.empty(0)
