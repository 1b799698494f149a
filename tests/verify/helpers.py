"""Builders of real predictions files shaped as `augury batch` writes them, written here with pyarrow."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from augury.models.base import ModelInfo
from augury.schema import Schema

CLASSES = ("no", "yes")
COMPUTED_AT = 1_700_000_000_000_000  # microseconds since the epoch


def classifier_info(version: str = "v1", classes: Sequence[Any] = CLASSES) -> ModelInfo:
    outputs = [("label", "string")] + [(f"proba_{c}", "float64") for c in classes]
    inputs = Schema.of([("x", "float64"), ("y", "float64")])
    return ModelInfo("churn", version, "sklearn", "churn.skops", inputs, Schema.of(outputs), "classification",
                     tuple(classes))


def regressor_info(version: str = "v1") -> ModelInfo:
    return ModelInfo("price", version, "sklearn", "price.skops", Schema.of([("x", "float64")]),
                     Schema.of([("value", "float64")]), "regression")


def classifier_columns(n: int, seed: int = 0, shift: float = 0.0) -> dict[str, Any]:
    """`label`, `proba_no`, `proba_yes` of `n` rows; `shift` moves P(yes) up (clipped to [0, 1])."""
    rng = np.random.default_rng(seed)
    p = np.clip(rng.beta(2.0, 2.0, n) + shift, 0.0, 1.0)
    return {"label": np.where(p > 0.5, "yes", "no"), "proba_no": 1.0 - p, "proba_yes": p}


def write_predictions(path: Path, columns: Mapping[str, Any], info: ModelInfo | None, *,
                      key_columns: Sequence[str] = ("id",), key_kind: str = "columns",
                      model_version: str | None = None, row_group_size: int | None = None) -> Path:
    """Write `columns` (keys and outputs) plus `model_version` and `computed_at`, with augury metadata
    unless `info` is None."""
    table = pa.table(dict(columns))
    n = table.num_rows
    version = model_version or (info.version if info is not None else "v1")
    table = table.append_column("model_version", pa.array([version] * n, type=pa.string()))
    table = table.append_column("computed_at", pa.array(np.full(n, COMPUTED_AT, dtype=np.int64))
                                .cast(pa.timestamp("us", tz="UTC")))
    if info is not None:
        meta = {"model": info.to_dict(), "key_columns": list(key_columns), "key_kind": key_kind}
        table = table.replace_schema_metadata({b"augury": json.dumps(meta).encode()})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def classifier_file(path: Path, n: int = 1000, seed: int = 0, shift: float = 0.0,
                    row_group_size: int | None = None) -> Path:
    """A classifier's predictions keyed by an int64 `id` column 0..n-1."""
    columns = {"id": np.arange(n, dtype=np.int64), **classifier_columns(n, seed, shift)}
    return write_predictions(path, columns, classifier_info(), row_group_size=row_group_size)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
