"""Fixtures shared by the whole suite: tiny real models trained here, and input files."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from redis_server import RedisServer, redis_server_binary

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True, scope="session")
def _fixture_models_importable() -> None:
    """`tests/fixtures` holds `module:function` models; make them importable like a user's module."""
    if str(FIXTURES) not in sys.path:
        sys.path.insert(0, str(FIXTURES))


def make_features(n: int, k: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"f{i}": rng.normal(size=n) for i in range(k)}


@pytest.fixture(scope="session")
def hgb_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HistGradientBoostingClassifier on 4 float features f0..f3, saved with joblib."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    cols = make_features(400)
    X = np.column_stack(list(cols.values()))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    clf = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(X, y)
    path = tmp_path_factory.mktemp("models") / "hgb.joblib"
    joblib.dump(clf, path)
    return path


@pytest.fixture()
def features_parquet(tmp_path: Path) -> Path:
    """3,000 rows of f0..f3 and an `id` column, in row groups of 500."""
    cols = make_features(3000, seed=1)
    table = pa.table({"id": np.arange(3000, dtype=np.int64), **cols})
    path = tmp_path / "features.parquet"
    pq.write_table(table, path, row_group_size=500)
    return path


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port for the whole session (`redis_server.RedisServer`);
    the test fails (not skips) if redis-server is not installed."""
    server = RedisServer(redis_server_binary())
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis database on the session's redis-server (restarted if a test stopped it)."""
    if redis_server.proc is None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url
