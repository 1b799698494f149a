"""What every adapter shares: the load context, output heads, and Arrow <-> NumPy conversion.

An adapter derives what it can from the model (feature names, classes, objective), then asks its
`LoadContext` to merge that with the manifest (`input_schema`, `head`) and to build the `ModelInfo`.
Output columns follow one rule for every format (`output_schema`): classifiers answer ``label`` then
``proba_<class>`` per class in the model's class order; regressors answer ``value`` (or ``value_0``,
``value_1``... for several outputs).
"""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from augury.errors import ConfigError, ModelLoadError, PredictionError
from augury.models.base import ModelInfo
from augury.models.evaluator import DEFAULT, Choice
from augury.models.manifest import Manifest, file_sha256, manifest_path
from augury.schema import Field, Schema

Array = NDArray[Any]
_FLOATS = ("float64", "float32")


@dataclass(frozen=True)
class Head:
    """What a model answers: a classifier's `classes` (with `proba` when it gives probabilities), else
    `n_values` numbers per row."""

    task: str
    classes: tuple[Any, ...] = ()
    proba: bool = False
    n_values: int = 1


@dataclass(frozen=True)
class LoadContext:
    """Everything a format's loader gets: the file, the resolved name and version, the manifest, options."""

    path: Path
    name: str
    version: str
    manifest: Manifest | None
    threads: int | None = None
    trust_skops: bool = False
    #: which evaluator to score with where a model has two (`augury.models.evaluator`).
    evaluator: Choice = DEFAULT

    @property
    def source(self) -> str:
        return str(self.path)

    def input_schema(
        self, derived: Sequence[tuple[str, str]] | None, native_missing: bool, *, names_fixed: bool
    ) -> Schema:
        """The input schema: the manifest's ``[[inputs]]`` if given, else `derived` (name, dtype) pairs.

        `native_missing`: the model accepts NaN, so float features default to ``allow_missing``.
        `names_fixed`: the model looks features up by name, so manifest names must be the model's names;
        otherwise features are positional and only their number must match.
        """
        specs = self.manifest.inputs if self.manifest is not None else None
        if specs is None:
            if derived is None:
                raise ModelLoadError(
                    f"cannot tell the input features of {self.path}: declare them as [[inputs]] tables "
                    f"(name, dtype) in {manifest_path(self.path)}"
                )
            return Schema(tuple(Field(n, d, native_missing and d in _FLOATS) for n, d in derived))
        where = f"manifest {manifest_path(self.path)}"
        if derived is not None:
            model_names = [n for n, _ in derived]
            if names_fixed and sorted(s.name for s in specs) != sorted(model_names):
                raise ConfigError(
                    f"{where}: [[inputs]] must name the model's features "
                    f"{', '.join(model_names)}, not {', '.join(s.name for s in specs)}"
                )
            if len(specs) != len(derived):
                raise ConfigError(f"{where}: declares {len(specs)} inputs, the model takes {len(derived)}")
        return Schema(
            tuple(
                Field(
                    s.name,
                    s.dtype,
                    (native_missing and s.dtype in _FLOATS) if s.allow_missing is None else s.allow_missing,
                )
                for s in specs
            )
        )

    def head(self, detected: Head, *, classes_known: bool) -> Head:
        """Apply the manifest's ``task``, ``outputs`` and ``classes`` to what the model says of itself.

        `classes_known`: the model stores its class labels (then the manifest may only repeat them);
        otherwise `detected.classes` are indices the manifest's labels replace one for one. A detected
        classifier can give probabilities iff `detected.proba`.
        """
        m = self.manifest
        if m is None:
            return detected
        where = f"manifest {m.path}"
        classes, proba, task = detected.classes, detected.proba, detected.task
        if m.classes is not None:
            if not classes:
                raise ConfigError(f"{where}: 'classes' given but {self.path} is not a classifier")
            if len(m.classes) != len(classes) or (classes_known and list(m.classes) != list(classes)):
                raise ConfigError(
                    f"{where}: 'classes' {list(m.classes)} do not match the model's classes {list(classes)}"
                )
            classes = m.classes
        if m.outputs is not None:
            if not classes:
                raise ConfigError(f"{where}: 'outputs' applies to classifiers; {self.path} is not one")
            if m.outputs == "proba" and not detected.proba:
                raise ConfigError(f"{where}: outputs = 'proba' but {self.path} gives no probabilities")
            proba = m.outputs == "proba"
        if m.task is not None and m.task != task:
            if m.task != "other" and task != "other":
                raise ConfigError(f"{where}: task {m.task!r} does not match the model (a {task} model)")
            if m.task == "classification":
                raise ConfigError(f"{where}: task 'classification' but {self.path} is not a classifier")
            task = m.task
        return Head(task, classes, proba, detected.n_values)

    def info(self, fmt: str, inputs: Schema, head: Head, meta: dict[str, Any] | None = None, *,
             evaluator: str) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            version=self.version,
            format=fmt,
            source=self.source,
            inputs=inputs,
            outputs=output_schema(head, self.source),
            task=head.task,
            classes=head.classes,
            meta=self._meta(meta),
            evaluator=evaluator,
        )


    def _meta(self, meta: dict[str, Any] | None) -> dict[str, Any]:
        """The adapter's `meta`, with the manifest's ``reference`` (a path) as `REFERENCE_META`."""
        found = dict(meta or {})
        if self.manifest is not None and self.manifest.reference is not None:
            found[REFERENCE_META] = str(self.manifest.reference)
        return found


#: `ModelInfo.meta` key of the reference data the manifest names (``reference = "valid.parquet"``).
REFERENCE_META = "reference"


def file_version(path: Path) -> str:
    """``sha256:`` and the first 16 hex digits of the SHA-256 of the file's bytes."""
    try:
        return "sha256:" + file_sha256(path)[:16]
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc}") from exc


def python_classes(values: Any) -> tuple[Any, ...]:
    """Class labels as plain Python values (numpy scalars unwrapped)."""
    return tuple(v.item() if isinstance(v, np.generic) else v for v in values)


def label_dtype(classes: Sequence[Any], where: str) -> str:
    """The schema dtype of a label column holding `classes`."""
    if all(isinstance(c, bool) for c in classes):
        return "bool"
    if all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return "int64"
    if all(isinstance(c, float) for c in classes):
        return "float64"
    if all(isinstance(c, str) for c in classes):
        return "string"
    raise ModelLoadError(
        f"{where}: class labels must be all strings, all integers, all floats or all "
        f"booleans, not {list(classes)!r}"
    )


def output_schema(head: Head, where: str) -> Schema:
    """The output columns for `head` (see the module docstring)."""
    if head.classes:
        fields = [Field("label", label_dtype(head.classes, where))]
        if head.proba:
            fields += [Field(f"proba_{c}", "float64") for c in head.classes]
        return Schema(tuple(fields))
    if head.n_values == 1:
        return Schema((Field("value", "float64"),))
    return Schema(tuple(Field(f"value_{i}", "float64") for i in range(head.n_values)))


def class_array(classes: Sequence[Any]) -> Array:
    """`classes` as an array to index with class positions (strings as an object array)."""
    if all(isinstance(c, str) for c in classes):
        return np.array(list(classes), dtype=object)
    return np.array(list(classes))


def empty_batch(outputs: Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=outputs.to_arrow())


def classifier_batch(outputs: Schema, labels: Any, proba: Any | None) -> pa.RecordBatch:
    """Build the output batch from labels and, when `outputs` has probability columns, an [n, k] array."""
    return pa.RecordBatch.from_arrays(classifier_arrays(outputs, labels, proba), schema=outputs.to_arrow())


def classifier_arrays(outputs: Schema, labels: Any, proba: Any | None) -> list[pa.Array]:
    """The output columns of `classifier_batch`, one Arrow array per column of `outputs`."""
    label_field = outputs.fields[0]
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise PredictionError(f"expected one label per row, got an array of shape {labels.shape}")
    try:
        arrays = [
            pa.array(labels.tolist() if labels.dtype.kind in "OUS" else labels, type=label_field.arrow_type)
        ]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PredictionError(f"labels do not fit the label type {label_field.dtype}: {exc}") from exc
    k = len(outputs) - 1
    if k:
        p = np.asarray(proba, dtype=np.float64)
        if p.shape != (len(labels), k):
            raise PredictionError(f"expected probabilities of shape {(len(labels), k)}, got {p.shape}")
        arrays += [pa.array(p[:, j]) for j in range(k)]
    return arrays


def value_batch(outputs: Schema, values: Any, n: int) -> pa.RecordBatch:
    """Build the output batch of a regressor from `values` of shape [n] or [n, m]."""
    return pa.RecordBatch.from_arrays(value_arrays(outputs, values, n), schema=outputs.to_arrow())


def value_arrays(outputs: Schema, values: Any, n: int) -> list[pa.Array]:
    """The output columns of `value_batch`, one Arrow array per column of `outputs`."""
    v = np.asarray(values, dtype=np.float64)
    m = len(outputs)
    if v.ndim == 2 and v.shape[1] == 1 and m == 1:
        v = v[:, 0]
    if (m == 1 and v.shape != (n,)) or (m > 1 and v.shape != (n, m)):
        raise PredictionError(f"expected {m} value(s) per row for {n} rows, got an array of shape {v.shape}")
    columns = [v] if m == 1 else [v[:, j] for j in range(m)]
    return [pa.array(c) for c in columns]


def booster_arrays(outputs: Schema, classes: Array | None, raw: Array, n: int) -> list[pa.Array]:
    """The output columns of a gradient-boosting library's `predict` (`raw`): values for a regressor; for
    a classifier, P(class 1) (a 1-D answer, binary) or one column per class, labelled by the most probable
    class."""
    if classes is None:
        return value_arrays(outputs, raw, n)
    proba = np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
    labels = classes[np.argmax(proba, axis=1)]
    return classifier_arrays(outputs, labels, proba if len(outputs) > 1 else None)


class BoosterModel(ABC):
    """What a gradient-boosting library's booster behind the `Model` contract shares (LightGBM, XGBoost):
    it is fed one float64 matrix, and its subclass turns that into the output columns (`_arrays`)."""

    def __init__(self, booster: Any, info: ModelInfo) -> None:
        self._booster = booster
        self._info = info
        self._classes = class_array(info.classes) if info.classes else None

    @property
    def info(self) -> ModelInfo:
        return self._info

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        outputs = self._info.outputs
        if batch.num_rows == 0:
            return empty_batch(outputs)
        return pa.RecordBatch.from_arrays(self._arrays(numeric_matrix(batch, np.float64)),
                                          schema=outputs.to_arrow())

    def matrix_predict(self) -> Callable[[Array], list[pa.Array]]:
        """`predict` of a float64 matrix (every booster is fed one)."""
        return self._arrays

    @abstractmethod
    def _arrays(self, x: Array) -> list[pa.Array]:
        """The output columns of the booster's answer to `x`."""


def numeric_matrix(batch: pa.RecordBatch, dtype: Any) -> Array:
    """The batch's columns as one C-contiguous [n, k] array of `dtype`; nulls become NaN (float dtypes)."""
    target = pa.from_numpy_dtype(np.dtype(dtype))
    if batch.num_rows and batch.num_columns and _all_of_type(batch.schema, target):
        # one C++ call (2.4 µs for 31 x 20 against 30 µs column by column), nulls as NaN as below
        return np.asarray(batch.to_tensor(null_to_nan=True, row_major=True))
    out = np.empty((batch.num_rows, batch.num_columns), dtype=dtype)
    for j, col in enumerate(batch.columns):
        c = col if col.type == target else pc.cast(col, target)
        if c.null_count:
            if not pa.types.is_floating(target):
                raise PredictionError(
                    f"feature {batch.schema.names[j]!r} has missing values, which a "
                    f"{target} input cannot hold"
                )
            c = pc.fill_null(c, float("nan"))
        out[:, j] = c.to_numpy(zero_copy_only=False)
    return out


#: schemas lately found to hold one type only (a schema's `equals` costs ~50 ns; listing its types to
#: compare them ~7 µs for 20 columns, a tenth of a small batch's whole predict on the server).
_uniform: collections.deque[tuple[pa.Schema, pa.DataType]] = collections.deque(maxlen=8)


def _all_of_type(schema: pa.Schema, target: pa.DataType) -> bool:
    """Whether every column of `schema` is of type `target`."""
    for known, of in tuple(_uniform):  # a copy: another thread may append
        if of == target and known.equals(schema):
            return True
    if all(t == target for t in schema.types):
        _uniform.append((schema, target))
        return True
    return False


def column_values(col: pa.Array) -> Array:
    """One column as a 1-D array: numbers as their NumPy dtype (nulls as NaN), strings as an object array."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.array(col.to_pylist(), dtype=object)
    return np.asarray(col.to_numpy(zero_copy_only=False))
