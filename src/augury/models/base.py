"""The one contract every model adapter keeps.

A model takes an Arrow record batch already conformed to its input schema (`augury.schema.conform`) and
returns a record batch with one row per input row, in the same order, with the columns of its output
schema. Classifiers answer `label` and one `proba_<class>` column per class; regressors answer `value`.
The batch runner and the server both call `predict_checked`, so both paths run the same code on the same
typed input (DESIGN.md, invariant 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

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


def predict_checked(model: Model, batch: pa.RecordBatch) -> pa.RecordBatch:
    """Call `model.predict` and check its answer: one row per input row, the declared output columns.

    Any exception from the model's framework becomes a `PredictionError` naming the model.
    """
    try:
        out = model.predict(batch)
    except PredictionError:
        raise
    except Exception as exc:
        raise PredictionError(
            f"model {model.info.name!r} failed to predict: {type(exc).__name__}: {exc}"
        ) from exc
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
