"""Store fixtures: every backend behind one `store` fixture, so the contract suite runs against each.

Adding a backend is one more entry in BACKENDS and a branch in `_open`. The Redis store runs on a real
redis-server started for the session (`tests/redis_server.py`), emptied before each test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from augury.store import PredictionStore, open_store

BACKENDS = ["memory", "sqlite", "redis"]

#: a fixed, microsecond-exact instant: 2024-01-02T03:04:05.123456Z.
T0_US = 1_704_164_645_123_456


def make_batch(
    keys: Sequence[str],
    *,
    computed_at_us: int | Sequence[int] | None = None,
    extra: dict[str, Any] | None = None,
    **columns: Any,
) -> pa.RecordBatch:
    """A published batch: `key`, `computed_at` (timestamp[us, UTC]) and the given prediction columns.
    Without columns, one float column `score` = the key's position."""
    n = len(keys)
    if computed_at_us is None:
        computed_at_us = int(time.time() * 1e6)
    stamps = [computed_at_us] * n if isinstance(computed_at_us, int) else list(computed_at_us)
    data: dict[str, Any] = {
        "key": pa.array(list(keys), pa.string()),
        "computed_at": pa.array(stamps, pa.timestamp("us", tz="UTC")),
    }
    data.update(columns or {"score": pa.array([float(i) for i in range(n)], pa.float64())})
    data.update(extra or {})
    return pa.record_batch(data)


@pytest.fixture()
def batch_of() -> Callable[..., pa.RecordBatch]:
    """`make_batch`, for tests that build published batches."""
    return make_batch


def _open(backend: str, tmp_path: Path, redis_url: str) -> PredictionStore:
    if backend == "memory":
        return open_store("memory://")
    if backend == "sqlite":
        return open_store(f"sqlite:///{tmp_path / 'store.db'}")
    if backend == "redis":
        return open_store(redis_url)
    raise AssertionError(backend)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionStore]:
    """A fresh, empty store of each backend."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    s = _open(request.param, tmp_path, redis_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture()
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


#: scheduling slack on top of `snapshot_s` for "seen within snapshot_s" (a loaded CI machine).
SLACK_S = 1.0


def seen_within(snapshot_s: float, check: Callable[[], bool]) -> float:
    """Poll `check` until it holds: at the first call without snapshots (`snapshot_s` = 0), within
    `snapshot_s` plus SLACK_S with them. Returns the seconds it took."""
    start = time.monotonic()
    while not check():
        waited = time.monotonic() - start
        assert snapshot_s > 0, "without read snapshots a change must be seen at once"
        assert waited < snapshot_s + SLACK_S, f"not seen after {waited:.2f} s (snapshot_s={snapshot_s})"
        time.sleep(snapshot_s / 10)
    return time.monotonic() - start


@pytest.fixture(name="seen_within")
def seen_within_fixture() -> Callable[[float, Callable[[], bool]], float]:
    """`seen_within`, for tests of cross-process visibility."""
    return seen_within
