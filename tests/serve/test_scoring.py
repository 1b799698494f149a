"""`Scorer`: the batch it hands `predict_checked` is `rows_to_batch`'s, to the bit, whatever the rows."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from augury.models import Model, function_model
from augury.schema import Schema, rows_to_batch
from augury.serve.scoring import Scorer


def _model(inputs: dict[str, str]) -> Model:
    @function_model(inputs=inputs, outputs={"value": "float64"}, task="regression")
    def first(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"value": np.asarray(batch[next(iter(inputs))], dtype=np.float64)}

    return first.to_model(name="first")


def _bits(batch: pa.RecordBatch) -> list[tuple[str, list[object]]]:
    """Each column's type and values, floats as their bit patterns (NaN == NaN, -0.0 != 0.0)."""
    out = []
    for field, col in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_float64(field.type):
            values: list[object] = np.asarray(col.to_numpy(zero_copy_only=False)).view(np.int64).tolist()
        else:
            values = col.to_pylist()
        out.append((f"{field.name}:{field.type}", values))
    return out


@pytest.mark.parametrize("n", [1, 2, 31, 64])
def test_float_rows_make_the_batch_rows_to_batch_makes(n: int) -> None:
    scorer = Scorer(_model({"a": "float64", "b": "float64", "c": "float64"}))
    specials = [0.0, -0.0, math.nan, math.inf, -math.inf, 1e-310, 1.5, -2.25, 1e308]
    rows = [[specials[(i + j) % len(specials)] for j in range(3)] for i in range(n)]
    schema = scorer.model.info.inputs
    built = scorer.batch(rows)
    assert built.schema == schema.to_arrow()
    assert _bits(built) == _bits(rows_to_batch(rows, schema))
    assert [o for o in scorer(rows) if not isinstance(o, dict)] == []


def test_other_schemas_use_rows_to_batch() -> None:
    scorer = Scorer(_model({"a": "float64", "n": "int64", "s": "string"}))
    rows = [[1.5, 2, "x"], [math.nan, -(2**63), ""]]
    schema: Schema = scorer.model.info.inputs
    assert _bits(scorer.batch(rows)) == _bits(rows_to_batch(rows, schema))
