"""The request path's unlocked counters and histograms render exactly as prometheus_client's own."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from augury.monitor.accumulators import CounterFamily, Families, HistogramFamily

BUCKETS = (0.0001, 0.0005, 0.5, 1.0, 10.0)


def _text(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_the_exposition_is_prometheus_clients_own() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counters = (Counter("x_things", "Things.", ["a", "b"], registry=theirs),
                CounterFamily("x_things", "Things.", ["a", "b"]))
    hists = (Histogram("y_seconds", "Time.", ["r"], buckets=BUCKETS, registry=theirs),
             HistogramFamily("y_seconds", "Time.", ["r"], buckets=BUCKETS))
    plain = (Counter("z", "Plain.", registry=theirs), CounterFamily("z", "Plain."))
    ours.register(Families([counters[1], hists[1], plain[1]]))
    for c in counters:
        c.labels("1", "2").inc()
        c.labels("1", "2").inc(2.5)
        c.labels("3", "4").inc()
    for h in hists:  # on a bound, between bounds, below the first, past the last
        for v in (0.00005, 0.0001, 0.3, 0.5, 1.0, 5.0, 50.0):
            h.labels("q").observe(v)
        h.labels("other").observe(0.2)
    for p in plain:
        p.inc(3)
    assert _text(ours) == _text(theirs)


def test_labels_are_checked_and_cells_kept() -> None:
    family = CounterFamily("x", "X.", ["a"])
    assert family.labels("1") is family.labels("1")
    with pytest.raises(ValueError, match="takes labels"):
        family.labels("1", "2")
    with pytest.raises(ValueError, match="increasing"):
        HistogramFamily("h", "H.", buckets=(1.0, 0.5))
