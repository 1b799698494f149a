"""The server's predict function: feature rows in, one outcome per row out, the model kept honest.

The batcher hands `Scorer` the flat list of rows of every request in a batch (each a list from
`schema.cast_row`, so already cast exactly as `conform` casts a batch run's chunks). The rows become one
Arrow batch (`rows_to_batch`, or the same batch built through NumPy when every feature is a float64)
scored by `predict_checked`, the very call the batch runner makes (DESIGN.md, invariant 1), and each
output row becomes a dict of output column -> value.

When every feature is a float64 and the model scores a matrix (`MatrixModel`: scikit-learn estimators fed
a matrix, XGBoost, LightGBM), the rows go straight into that matrix and the model's `matrix_predict`, the
function its `predict` applies to a batch's matrix: same code, same numbers, without the two record
batches around it. Most of a small batch's cost was those (measured on 2 cores, a 100-tree
HistGradientBoosting model: 64 µs per one-row batch through Arrow, 25 µs of it building the input batch,
11 µs the output batch; see BENCHMARKS.md), and under light load or across many cores most batches are
small.

If the model raises, the rows are scored again one at a time, so that an example the model refuses fails
only its own request (as a `Refused` outcome) and the others it was batched with are answered, as the
batch runner writes such a row to its errors file and carries on. A model that breaks its contract
(wrong number of rows or columns) is not retried: the whole batch fails.

Thread limits: BLAS and OpenMP are limited to `threads` in the thread that runs the model (OpenMP's
limit is per thread, so it must be set there: measured on 2 cores, a one-row HistGradientBoosting
``predict_proba`` takes 1.3 ms at p50 and 6.9 ms at p99 with the limit set only in the main thread,
0.5 and 0.7 ms with it set in the model thread).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from augury.errors import PredictionError
from augury.models import Model, predict_checked
from augury.models.base import MatrixModel, predict_matrix_checked
from augury.schema import rows_to_batch

log = logging.getLogger(__name__)

Row = list[Any]
Values = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    """The model raised on this one example: `reason` is its error."""

    reason: str


Outcome = Values | Refused


class Scorer:
    """`predict` for the batcher: rows cast to `model.info.inputs` -> one `Outcome` per row, in order."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self._schema = model.info.inputs
        self._arrow_schema = self._schema.to_arrow()
        self._floats = all(f.dtype == "float64" for f in self._schema.fields)
        self._outputs = model.info.outputs.names
        self._matrix = model.matrix_predict() if self._floats and isinstance(model, MatrixModel) else None

    def __call__(self, rows: list[Row]) -> list[Outcome]:
        try:
            return self._score(rows)
        except PredictionError as exc:
            if exc.__cause__ is None:  # the model broke its contract: no retry, the batch fails
                raise
            if len(rows) == 1:
                return [Refused(str(exc))]
            log.info("model failed on a batch of %d rows (%s); scoring them one at a time", len(rows), exc)
        return [self._one(row) for row in rows]

    def _one(self, row: Row) -> Outcome:
        try:
            return self._score([row])[0]
        except PredictionError as exc:
            if exc.__cause__ is None:
                raise
            return Refused(str(exc))

    def batch(self, rows: list[Row]) -> pa.RecordBatch:
        """`rows_to_batch(rows, schema)`; for a schema of float64 features only, built from one NumPy array
        (one conversion for the batch, then a slice per column: half the time of one per column)."""
        if not self._floats or not rows:
            return rows_to_batch(rows, self._schema)
        n = len(rows)
        flat = pa.array(np.array(rows, dtype=np.float64).T.ravel())
        return pa.RecordBatch.from_arrays([flat.slice(j * n, n) for j in range(len(self._arrow_schema))],
                                          schema=self._arrow_schema)

    def _score(self, rows: list[Row]) -> list[Outcome]:
        if self._matrix is not None and rows:
            x = np.array(rows, dtype=np.float64)  # what `batch` builds its columns from
            columns = [a.to_pylist() for a in predict_matrix_checked(self.model, self._matrix, x)]
        else:
            out = predict_checked(self.model, self.batch(rows))
            columns = [out.column(i).to_pylist() for i in range(out.num_columns)]
        names = self._outputs
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def limit_threads(threads: int) -> None:
    """Cap BLAS and OpenMP thread pools at `threads` for the calling thread (and BLAS process-wide)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it there is nothing to limit
        return
    threadpool_limits(limits=threads)


def model_executor(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The single thread the model runs on, with its thread pools capped at `threads`."""
    init: Callable[[], None] = lambda: limit_threads(threads)  # noqa: E731
    return concurrent.futures.ThreadPoolExecutor(1, "augury-model", initializer=init)
