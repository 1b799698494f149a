"""The store a catalogue needs: bytes per prediction from a real temporary SQLite store, lookup times."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from augury.advise.storecost import measure_store
from augury.schema import Schema

OUT = Schema.of([("label", "int64"), ("proba_0", "float64"), ("proba_1", "float64")])


def test_size_and_lookups_from_scored_rows() -> None:
    keys = [f"item-{i}" for i in range(3000)] + ["item-0"]  # a duplicate key is published once
    outputs = pa.RecordBatch.from_pydict({"label": [0, 1] * 50, "proba_0": [0.25, 0.75] * 50,
                                          "proba_1": [0.75, 0.25] * 50}, schema=OUT.to_arrow())
    s = measure_store(keys, outputs, OUT, "v1", time.monotonic() + 0.5)
    assert s.rows_published == 3000 and s.rows_scored == 100
    assert 20 < s.bytes_per_prediction < 200  # key + a MessagePack record of 3 values + index entry
    assert s.base_bytes > 0
    assert s.lookups >= 10 and 0 < s.lookup_p50_s <= s.lookup_p99_s < 0.05
    assert s.bytes_for(1_000_000) == pytest.approx(s.base_bytes + 1_000_000 * s.bytes_per_prediction)


def test_without_scored_rows_zeros_stand_in() -> None:
    s = measure_store([str(i) for i in range(500)], None, OUT, "v1", time.monotonic())
    assert s.rows_scored == 0 and s.rows_published == 500 and s.bytes_per_prediction > 0
