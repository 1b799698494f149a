"""Counters and histograms for the request path: plain Python numbers, exported through prometheus_client.

prometheus_client's own metric children take a lock on every update (measured here: 0.27 µs for a
counter's ``inc``, 0.59 µs for a histogram's ``observe``, more under a server's cache pressure), which
at 30,000 requests/s and five updates per request is several percent of the one core an event loop has.
The server updates its metrics only from the event loop thread, one request at a time, so these
families keep unlocked numbers (an ``inc`` is one addition, an ``observe`` one ``bisect`` and two) and
hand them to prometheus_client at scrape time, through its public custom-collector API, as the
standard metric families: the text on ``/metrics`` is what prometheus_client's own Counter and Histogram
would give (``_total``, ``_bucket{le=...}``, ``_count``, ``_sum``), without the ``_created`` samples.

Not thread-safe by design: update a family from one thread only (the event loop), or accept that two
threads incrementing at once may lose an update. Reading (scraping) from another thread is safe.

A family's `state` is plain JSON-able data, and `collect` adds other processes' states to its own: how
the worker processes of one server (``--workers N``) export one set of totals (`monitor.sharing`).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class CounterCell:
    """One labelled counter: `inc` adds to `value`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramCell:
    """One labelled histogram: per-bucket counts (the last is +Inf) and the sum of observed values."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count `value` in the first bucket whose upper bound is >= it (Prometheus's ``le``)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)

    def _check(self, values: tuple[str, ...]) -> None:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")


class CounterFamily(_Family):
    """A counter with labels; `labels(...)` gives the cell to keep and increment."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labelnames)
        self._cells: dict[tuple[str, ...], CounterCell] = {}

    def labels(self, *values: str) -> CounterCell:
        cell = self._cells.get(values)
        if cell is None:
            self._check(values)
            cell = self._cells[values] = CounterCell()
        return cell

    def inc(self, amount: float = 1.0) -> None:
        """Increment the unlabelled counter."""
        self.labels().inc(amount)

    def state(self) -> list[list[Any]]:
        """Every cell as ``[*label values, value]``."""
        return [[*values, cell.value] for values, cell in list(self._cells.items())]

    def collect(self, others: Sequence[list[list[Any]]] = ()) -> Metric:
        """The family for exposition: this process's cells plus `others` (other processes' `state`)."""
        totals = {values: cell.value for values, cell in list(self._cells.items())}
        for state in others:
            for *labels, value in state:
                key = tuple(labels)
                totals[key] = totals.get(key, 0.0) + value
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, value in totals.items():
            family.add_metric(list(values), value)
        return family


class HistogramFamily(_Family):
    """A histogram with labels and fixed bucket upper bounds (+Inf is added)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = tuple(float(b) for b in buckets)
        if not bounds or list(bounds) != sorted(set(bounds)) or math.isinf(bounds[-1]):
            raise ValueError(f"{name}: buckets must be finite, distinct and increasing, got {buckets}")
        self.bounds = bounds
        self._cells: dict[tuple[str, ...], HistogramCell] = {}

    def labels(self, *values: str) -> HistogramCell:
        cell = self._cells.get(values)
        if cell is None:
            self._check(values)
            cell = self._cells[values] = HistogramCell(self.bounds)
        return cell

    def observe(self, value: float) -> None:
        """Observe into the unlabelled histogram."""
        self.labels().observe(value)

    def state(self) -> list[list[Any]]:
        """Every cell as ``[*label values, bucket counts, sum]``."""
        return [[*values, list(cell.counts), cell.sum] for values, cell in list(self._cells.items())]

    def collect(self, others: Sequence[list[list[Any]]] = ()) -> Metric:
        """The family for exposition: this process's cells plus `others` (other processes' `state`;
        a cell with other buckets than this family's is left out)."""
        totals = {values: (list(cell.counts), cell.sum) for values, cell in list(self._cells.items())}
        for state in others:
            for *labels, counts, total in state:
                if len(counts) != len(self.bounds) + 1:
                    continue
                key = tuple(labels)
                mine = totals.get(key)
                totals[key] = (counts, total) if mine is None else (
                    [a + b for a, b in zip(mine[0], counts, strict=True)], mine[1] + total)
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [*map(_le, self.bounds), "+Inf"]
        for values, (counts, total) in totals.items():
            cumulative, running = [], 0
            for edge, count in zip(edges, counts, strict=True):
                running += count
                cumulative.append((edge, float(running)))
            family.add_metric(list(values), cumulative, total)
        return family


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it in ``le``."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


class Families(Collector):
    """The collector to register: it exports every family given, in order, at each scrape, adding the
    states `others` returns (one ``{family name: state}`` per other process) when given."""

    def __init__(self, families: Sequence[CounterFamily | HistogramFamily],
                 others: Callable[[], Sequence[dict[str, Any]]] | None = None) -> None:
        self._families = list(families)
        self._others = others

    def state(self) -> dict[str, list[list[Any]]]:
        """``{family name: state}`` for every family."""
        return {family.name: family.state() for family in self._families}

    def collect(self) -> Iterator[Metric]:
        others = self._others() if self._others is not None else ()
        for family in self._families:
            yield family.collect([o.get(family.name, []) for o in others])
