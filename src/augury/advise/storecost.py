"""Measuring the prediction store a catalogue needs: bytes per prediction and lookup latency.

The scored sample is published into a temporary SQLite store (the embedded default) and the file's size
is compared with an empty store's; single-key lookups (`get_many([key])`, as the server makes them) are
then timed on it. When fewer rows were scored than published, the scored rows' values are reused for the
rest (their encoded size is what matters); with none scored, zeros of the output types stand in.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from augury.advise.measure import tiled
from augury.advise.measurements import StoreCost
from augury.schema import Schema
from augury.store import COMPUTED_AT_COLUMN, KEY_COLUMN, open_store

#: most rows published into the temporary store.
MAX_ROWS = 20_000
#: most single-key lookups timed (the first few are a warm-up and are not counted).
MAX_LOOKUPS = 3_000
_WARMUP = 50


def measure_store(keys: list[str], outputs: pa.RecordBatch | None, output_schema: Schema, model_version: str,
                  deadline: float, *, max_rows: int = MAX_ROWS) -> StoreCost:
    """Publish up to `max_rows` of `keys` (distinct) with `outputs` and time lookups until `deadline`."""
    unique = list(dict.fromkeys(keys))[:max_rows]
    n = len(unique)
    scored = outputs.num_rows if outputs is not None else 0
    values = tiled(outputs, n) if outputs is not None and scored else _zeros(output_schema, n)
    with tempfile.TemporaryDirectory(prefix="augury-advise-") as tmp:
        empty = Path(tmp) / "empty.db"
        _publish(empty, [], values.slice(0, 0), model_version)
        base = _size(empty)
        full = Path(tmp) / "sample.db"
        times = _publish(full, unique, values, model_version, deadline=deadline)
        size = _size(full)
    p50, p99 = (float(np.percentile(times, 50)), float(np.percentile(times, 99))) if times else (0.0, 0.0)
    return StoreCost(max(size - base, 0) / n, base, n, min(scored, n), p50, p99, len(times))


def _publish(path: Path, keys: list[str], values: pa.RecordBatch, model_version: str,
             deadline: float | None = None) -> list[float]:
    """Publish one version to a new store at `path`; with a `deadline`, time single-key lookups."""
    store = open_store(f"sqlite:///{path}")
    try:
        now = pa.array(np.full(len(keys), int(time.time() * 1e6), dtype=np.int64)).cast(
            pa.timestamp("us", tz="UTC"))
        batch = pa.RecordBatch.from_arrays(
            [pa.array(keys, type=pa.string()), now, *values.columns],
            names=[KEY_COLUMN, COMPUTED_AT_COLUMN, *values.schema.names])
        store.publish([batch], model_version=model_version)
        times: list[float] = []
        if deadline is None or not keys:
            return times
        rng = np.random.default_rng(0)
        picks = rng.integers(0, len(keys), size=MAX_LOOKUPS + _WARMUP).tolist()
        for i, pick in enumerate(picks):
            if time.monotonic() > deadline and len(times) >= 10:
                break
            started = time.perf_counter()
            store.get_many([keys[pick]])
            if i >= _WARMUP:
                times.append(time.perf_counter() - started)
        return times
    finally:
        store.close()


def _size(path: Path) -> int:
    """Bytes of the store's files (the database, and its WAL and shared-memory files if left)."""
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _zeros(schema: Schema, n: int) -> pa.RecordBatch:
    fill = {"string": "0", "bool": False}
    return pa.RecordBatch.from_arrays(
        [pa.array([fill.get(f.dtype, 0)] * n, type=f.arrow_type) for f in schema.fields],
        schema=schema.to_arrow())
