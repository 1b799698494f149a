"""The one contract every model adapter keeps.

A model takes an Arrow record batch already conformed to its input schema (`augury.schema.conform`) and
returns a record batch with one row per input row, in the same order, with the columns of its output
schema. Classifiers answer `label` and one `proba_<class>` column per class; regressors answer `value`.
The batch runner and the server both call `predict_checked`, so both paths run the same code on the same
typed input (DESIGN.md, invariant 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from augury.errors import PredictionError
from augury.models.evaluator import PYTHON
from augury.schema import Schema

#: what a model's outputs mean: drives default verification gates and how results are shown.
TASKS = ("classification", "regression", "other")


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a loaded model. `version` is always set: the manifest's, or a content hash.
    `evaluator` names the code that computes its predictions (`augury.models.evaluator`): decided when
    the model is loaded, and recorded with every prediction."""

    name: str
    version: str
    format: str
    source: str
    inputs: Schema
    outputs: Schema
    task: str = "other"
    classes: tuple[Any, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    evaluator: str = PYTHON

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "format": self.format,
            "source": self.source,
            "task": self.task,
            "classes": list(self.classes),
            "inputs": self.inputs.to_list(),
            "outputs": self.outputs.to_list(),
            "evaluator": self.evaluator,
        }


@runtime_checkable
class Model(Protocol):
    """A loaded model: its description, and a vectorised predict over conformed Arrow batches."""

    @property
    def info(self) -> ModelInfo: ...

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Score every row of `batch` (conformed to `info.inputs`); one output row per input row, in order."""
        ...


T = TypeVar("T")

#: `predict` as a function of the batch's features as one float64 matrix: rows x inputs, in the input
#: schema's order, nulls as NaN (`numeric_matrix`); one Arrow array per output column.
MatrixPredict = Callable[[NDArray[np.float64]], list[pa.Array]]


@runtime_checkable
class MatrixModel(Protocol):
    """A model whose `predict` scores a batch's float64 matrix (`matrix_predict`).

    The server's fast path for small batches: building a one-row record batch, then its matrix, then an
    output record batch cost ~40 µs of a ~60 µs one-row prediction of a 100-tree HistGradientBoosting
    model on 2 cores; the rows go straight into a matrix instead. `predict` itself goes through the same
    function, so both paths run the same code on the same numbers (DESIGN.md, invariant 1).
    """

    def matrix_predict(self) -> MatrixPredict | None:
        """The function `predict` applies to ``numeric_matrix(batch, float64)`` of a conformed batch, and
        returns as a batch of the output schema; None when `predict` does not go through one."""
        ...


def predict_matrix_checked(model: Model, predict: MatrixPredict, x: NDArray[np.float64]) -> list[pa.Array]:
    """`predict_checked` for a model's `matrix_predict` and a matrix of `x.shape[0]` rows: the same errors,
    the same checks (one value per row in each declared output column)."""
    out = _framework_call(model, predict, x)
    expected = model.info.outputs.names
    if len(out) != len(expected):
        raise PredictionError(
            f"model {model.info.name!r} returned {len(out)} columns, expected {expected}"
        )
    for column in out:
        if len(column) != x.shape[0]:
            raise PredictionError(
                f"model {model.info.name!r} returned {len(column)} rows for {x.shape[0]} inputs"
            )
    return out


def predict_checked(model: Model, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Call `model.predict` and check its answer: one row per input row, the declared output columns.

    Any exception from the model's framework becomes a `PredictionError` naming the model.
    """
    out = _framework_call(model, model.predict, batch)
    if out.num_rows != batch.num_rows:
        raise PredictionError(
            f"model {model.info.name!r} returned {out.num_rows} rows for {batch.num_rows} inputs"
        )
    expected = model.info.outputs.names
    if out.schema.names != expected:
        raise PredictionError(
            f"model {model.info.name!r} returned columns {out.schema.names}, expected {expected}"
        )
    return out


def _framework_call(model: Model, predict: Callable[[Any], T], arg: Any) -> T:
    """`predict(arg)`, any exception but a `PredictionError` turned into one naming the model."""
    try:
        return predict(arg)
    except PredictionError:
        raise
    except Exception as exc:
        raise PredictionError(
            f"model {model.info.name!r} failed to predict: {type(exc).__name__}: {exc}"
        ) from exc
