"""Tiny real models, trained once per session into a temporary folder, and the same-answer check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from augury.models import Model, predict_checked

N = 200


@dataclass(frozen=True)
class Data:
    """200 rows of 4 float features, with binary, 3-class, string-class and numeric targets."""

    x: np.ndarray
    y_bin: np.ndarray
    y_multi: np.ndarray
    y_str: np.ndarray
    y_reg: np.ndarray
    texts: list[str]

    def batch(self, names: list[str] | None = None, dtype: Any = None) -> pa.RecordBatch:
        dtype = dtype or pa.float64()
        names = names or [f"f{i}" for i in range(self.x.shape[1])]
        return pa.RecordBatch.from_arrays([pa.array(self.x[:, j]).cast(dtype) for j in range(len(names))],
                                          names=names)


@pytest.fixture(scope="session")
def data() -> Data:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(N, 4))
    score = x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + rng.normal(scale=0.3, size=N)
    y_multi = np.digitize(score, [-0.5, 0.5])
    words = np.array(["good", "great", "fine", "bad", "awful", "poor", "film", "plot", "actor", "music"])
    texts = [" ".join(rng.choice(words[:6] if s > 0 else words[3:], size=4)) for s in score]
    return Data(x=x, y_bin=(score > 0).astype(np.int64), y_multi=y_multi,
                y_str=np.array(["low", "mid", "high"], dtype=object)[y_multi],
                y_reg=2.0 * x[:, 0] - x[:, 3] + 0.1 * rng.normal(size=N), texts=texts)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _column_equal(name: str, a: pa.Array, b: pa.Array, exact: bool) -> None:
    assert a.type == b.type, name
    if pa.types.is_floating(a.type) and not exact:
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-9, atol=0, err_msg=name)
    else:
        assert a.to_pylist() == b.to_pylist(), name


def check_same_answer(model: Model, batch: pa.RecordBatch, *, exact: bool, seed: int = 0) -> pa.RecordBatch:
    """Predict `batch` whole, one row at a time, and in random chunks; the answers must agree.

    Labels always exactly; float outputs exactly when `exact`, else within 1e-9 relative.
    """
    full = predict_checked(model, batch)
    rows = pa.Table.from_batches([predict_checked(model, batch.slice(i, 1)) for i in range(batch.num_rows)])
    rng = np.random.default_rng(seed)
    chunks, start = [], 0
    while start < batch.num_rows:
        size = int(rng.integers(1, 50))
        chunks.append(predict_checked(model, batch.slice(start, size)))
        start += size
    for other in (rows, pa.Table.from_batches(chunks)):
        assert other.num_rows == full.num_rows
        for name in full.schema.names:
            _column_equal(name, full.column(name), other.column(name).combine_chunks(), exact)
    return full


@pytest.fixture
def same_answer() -> Callable[..., pa.RecordBatch]:
    return check_same_answer


def write_manifest(model_path: Path, text: str) -> Path:
    path = model_path.with_name(model_path.stem + ".augury.toml")
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def manifest() -> Callable[[Path, str], Path]:
    """Write ``<stem>.augury.toml`` beside a model file."""
    return write_manifest
