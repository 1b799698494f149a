"""Fixtures for the advisor: a fast model trained here, `module:function` models with known costs, and
catalogues and traffic logs written as real files."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

HERE = Path(__file__).parent


@pytest.fixture(autouse=True, scope="session")
def _advise_models_importable() -> None:
    """`advise_models` (beside this file) holds `module:function` models; import it as a user's module."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))


@pytest.fixture(autouse=True)
def _no_calibration_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Advice in tests uses the built-in overheads, whatever this machine's user calibrated."""
    monkeypatch.setenv("AUGURY_CALIBRATION", str(tmp_path / "no-calibration.json"))


@pytest.fixture(scope="session")
def lr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LogisticRegression on 4 float features f0..f3 (well under a millisecond per call)."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    path = tmp_path_factory.mktemp("advise-models") / "lr.joblib"
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] + x[:, 1] > 0).astype(int)), path)
    return path


def write_ab_catalogue(path: Path, n: int, seed: int = 0) -> Path:
    """`n` examples with an `id` and the features `a`, `b` of the `advise_models` functions."""
    rng = np.random.default_rng(seed)
    pq.write_table(pa.table({"id": np.arange(n), "a": rng.normal(size=n), "b": rng.normal(size=n)}), path)
    return path


def zipf_ids(n_catalogue: int, requests: int, s: float, seed: int = 0) -> np.ndarray:
    """Catalogue ids requested with Zipf(s) popularity (rank r has weight r^-s), ranks shuffled over ids."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_catalogue + 1) ** s
    ranks = rng.choice(n_catalogue, size=requests, p=weights / weights.sum())
    return rng.permutation(n_catalogue)[ranks]


@pytest.fixture(name="write_ab_catalogue")
def _write_ab_catalogue() -> object:
    return write_ab_catalogue


@pytest.fixture(name="zipf_ids")
def _zipf_ids() -> object:
    return zipf_ids
