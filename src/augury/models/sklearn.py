"""scikit-learn models (and sklearn-API estimators) from joblib, pickle and skops files.

Security: pickle-based formats (``.joblib``, ``.pkl``, ``.pickle``) run arbitrary code when they are
loaded, so only load files you trust. skops (``.skops``) is the safer format: it refuses types outside its
trusted set unless ``trust_skops=True`` is passed after reviewing the types it lists.

Any object with ``predict`` is accepted by duck typing: a fitted scikit-learn estimator or pipeline, or a
sklearn-API model from another library (``XGBClassifier``, ``LGBMRegressor``...). It is a classifier when it
has ``classes_`` (a 1-D array); it then gives probabilities when it has ``predict_proba``.

Inputs, in order of preference: the manifest's ``[[inputs]]``; ``feature_names_in_`` (fed as a pandas
DataFrame with those columns; a column is ``string`` when a fitted ColumnTransformer sends it to a text
vectorizer or to an encoder with string categories, float64 otherwise: declare other string columns in a
manifest); a text vectorizer as first step (one ``string`` feature named ``text``, fed as a 1-D array of
str); ``n_features_in_`` (features ``f0..f{n-1}``, float64, fed as one C-contiguous 2-D float64 array).
Features allow missing values when the estimator's own tags say it accepts NaN (a pipeline: when NaN
reaches an imputer, or the end, through steps that accept it). A HistGradientBoosting model fed as a
matrix is scored from one pass of raw scores, compiled when numba is installed (`augury.models.hgb`);
`ModelInfo.evaluator` says which code scores the model (`augury.models.evaluator`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow as pa

from augury.errors import MissingExtraError, ModelLoadError
from augury.models._common import (
    Array,
    Head,
    LoadContext,
    class_array,
    classifier_arrays,
    column_values,
    empty_batch,
    numeric_matrix,
    python_classes,
    value_arrays,
)
from augury.models.base import MatrixPredict, Model, ModelInfo
from augury.models.evaluator import LIGHTGBM, SKLEARN, XGBOOST
from augury.models.hgb import HGBScorer, exact_scorer
from augury.schema import Schema

#: estimators whose ``predict`` is, by its implementation, ``classes_[argmax(predict_proba)]``.
_ARGMAX_PREDICT = {
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
}
#: top-level module of a missing package -> the augury extra that installs it.
_EXTRAS = {
    "sklearn": "sklearn",
    "joblib": "sklearn",
    "skops": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnxruntime": "onnx",
}


def load_pickle(ctx: LoadContext) -> Model:
    """Load a ``.joblib``/``.pkl``/``.pickle`` file with joblib (which also reads plain pickles)."""
    try:
        import joblib
    except ImportError as exc:
        raise MissingExtraError(f"loading {ctx.path}", "sklearn", "joblib") from exc
    try:
        obj = joblib.load(ctx.path)
    except ModuleNotFoundError as exc:
        raise _missing_module(ctx, exc) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{ctx.path} is not a readable joblib/pickle model file "
            f"({type(exc).__name__}: {exc}); save the model with joblib.dump"
        ) from exc
    return SklearnModel.wrap(obj, ctx, "sklearn")


def load_skops(ctx: LoadContext) -> Model:
    """Load a ``.skops`` file, refusing types skops does not trust unless ``ctx.trust_skops``."""
    try:
        import skops.io as sio
    except ImportError as exc:
        raise MissingExtraError(f"loading {ctx.path}", "sklearn", "skops") from exc
    try:
        untrusted = list(sio.get_untrusted_types(file=ctx.path))
    except Exception as exc:
        raise ModelLoadError(
            f"{ctx.path} is not a readable skops file ({type(exc).__name__}: {exc}); "
            f"save the model with skops.io.dump"
        ) from exc
    if untrusted and not ctx.trust_skops:
        raise ModelLoadError(
            f"{ctx.path} holds types that skops does not trust by default: "
            f"{', '.join(untrusted)}; review them, then load with trust_skops=True"
        )
    try:
        obj = sio.load(ctx.path, trusted=untrusted)
    except ModuleNotFoundError as exc:
        raise _missing_module(ctx, exc) from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{ctx.path}: skops failed to load the model ({type(exc).__name__}: {exc})"
        ) from exc
    return SklearnModel.wrap(obj, ctx, "skops")


def _missing_module(ctx: LoadContext, exc: ModuleNotFoundError) -> ModelLoadError:
    module = (exc.name or "").split(".")[0]
    extra = _EXTRAS.get(module)
    if extra is not None:
        return MissingExtraError(f"loading {ctx.path}", extra, module)
    return ModelLoadError(f"loading {ctx.path} needs the Python module {exc.name!r}, which is not installed")


class SklearnModel:
    """An estimator with ``predict`` behind the `Model` contract (build it with `wrap`)."""

    def __init__(self, estimator: Any, info: ModelInfo, feed: str, argmax: bool) -> None:
        self._est = estimator
        self._info = info
        self._feed = feed  # "frame" | "text" | "matrix" | "object"
        self._argmax = argmax
        self._hgb: HGBScorer | None = None
        self._classes = class_array(info.classes) if info.classes else None
        names = getattr(estimator, "feature_names_in_", None)
        self._frame_columns = [str(n) for n in names] if feed == "frame" and names is not None else []

    @property
    def info(self) -> ModelInfo:
        return self._info

    @classmethod
    def wrap(cls, est: Any, ctx: LoadContext, fmt: str) -> SklearnModel:
        """Describe `est` (see the module docstring) and wrap it; `ModelLoadError` if it cannot predict."""
        if not callable(getattr(est, "predict", None)):
            raise ModelLoadError(
                f"{ctx.path} holds a {type(est).__module__}.{type(est).__qualname__}, "
                f"which has no predict method; save a fitted model"
            )
        derived, names_fixed = _derived_inputs(est)
        inputs = ctx.input_schema(derived, _accepts_nan(est), names_fixed=names_fixed)
        head = ctx.head(_detect_head(est, ctx), classes_known=True)
        feed = _feed(est, inputs, names_fixed)
        if feed == "frame":
            try:
                import pandas  # noqa: F401
            except ImportError as exc:
                raise MissingExtraError(f"{ctx.path} (fitted on a DataFrame)", "sklearn", "pandas") from exc
        argmax = _qualname(_final_step(est)) in _ARGMAX_PREDICT
        hgb = None
        floats = all(f.dtype == "float64" for f in inputs.fields)
        if feed == "matrix":
            hgb = exact_scorer(est, len(inputs), evaluator=ctx.evaluator)
        elif feed == "frame" and floats and ctx.evaluator != "library":
            # fitted on a DataFrame of floats: the compiled scorer reads the same columns as a matrix
            hgb = exact_scorer(est, len(inputs), evaluator=ctx.evaluator,
                               as_input=functools.partial(_frame, est.feature_names_in_))
        evaluator = hgb.evaluator if hgb is not None else _library(est)
        model = cls(est, ctx.info(fmt, inputs, head, {"estimator": _qualname(est)}, evaluator=evaluator),
                    feed, argmax)
        model._hgb = hgb
        return model

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Score `batch`; a classifier's label is the estimator's own ``predict`` unless that provably
        equals ``classes_[argmax(predict_proba)]`` (random forests), which saves a second pass. A
        HistGradientBoosting model is scored from one pass of raw scores (`augury.models.hgb`)."""
        outputs = self._info.outputs
        if batch.num_rows == 0:
            return empty_batch(outputs)
        x = self._matrix(batch) if self._hgb is not None else self._features(batch)
        return pa.RecordBatch.from_arrays(self._arrays(x, batch.num_rows), schema=outputs.to_arrow())

    def matrix_predict(self) -> MatrixPredict | None:
        """`predict` of a float64 matrix, for an estimator fed one in the input schema's order."""
        if self._feed != "matrix":
            return None
        return lambda x: self._arrays(x, x.shape[0])

    def _arrays(self, x: Any, n: int) -> list[pa.Array]:
        """The output columns for features `x` (as `_matrix` makes them for the one-pass scorer, else as
        `_features` makes them) of `n` rows."""
        outputs = self._info.outputs
        if self._hgb is not None:
            raw = self._hgb.raw(x)
            if self._classes is None:
                return value_arrays(outputs, self._hgb.values(raw), n)
            proba = self._hgb.proba(raw) if len(outputs) > 1 else None
            return classifier_arrays(outputs, self._hgb.labels(raw), proba)
        if self._classes is None:
            return value_arrays(outputs, self._est.predict(x), n)
        if len(outputs) == 1:
            return classifier_arrays(outputs, self._est.predict(x), None)
        proba = np.asarray(self._est.predict_proba(x))
        labels = self._classes[np.argmax(proba, axis=1)] if self._argmax else self._est.predict(x)
        return classifier_arrays(outputs, labels, proba)

    def _matrix(self, batch: pa.RecordBatch) -> Any:
        """The features as one float64 matrix, in the estimator's column order."""
        if self._feed == "frame":
            batch = batch.select(self._frame_columns)
        return numeric_matrix(batch, np.float64)

    def _features(self, batch: pa.RecordBatch) -> Any:
        if self._feed == "matrix":
            return numeric_matrix(batch, np.float64)
        if self._feed == "text":
            return column_values(batch.column(0))
        if self._feed == "frame":
            import pandas as pd

            return pd.DataFrame({n: column_values(batch.column(n)) for n in self._frame_columns})
        columns = [column_values(c) for c in batch.columns]
        out: Array = np.empty((batch.num_rows, len(columns)), dtype=object)
        for j, c in enumerate(columns):
            out[:, j] = c
        return out


def _frame(columns: Any, x: Any) -> Any:
    """A matrix as the DataFrame a model fitted on one is fed (for `exact_scorer`'s check)."""
    import pandas as pd

    return pd.DataFrame(x, columns=list(columns))


def _library(est: Any) -> str:
    """The evaluator of an estimator scored by its own ``predict``: the library of its final step (an
    XGBoost or LightGBM estimator with scikit-learn's API is scored by XGBoost or LightGBM)."""
    module = type(_final_step(est)).__module__
    if module.startswith("xgboost."):
        return XGBOOST
    if module.startswith("lightgbm."):
        return LIGHTGBM
    return SKLEARN


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _final_step(est: Any) -> Any:
    steps = getattr(est, "steps", None)
    return _final_step(steps[-1][1]) if isinstance(steps, list) and steps else est


def _first_step(est: Any) -> Any:
    steps = getattr(est, "steps", None)
    return _first_step(steps[0][1]) if isinstance(steps, list) and steps else est


def _derived_inputs(est: Any) -> tuple[list[tuple[str, str]] | None, bool]:
    """(name, dtype) pairs the estimator reveals, and whether it checks names (feature_names_in_)."""
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        strings = _string_columns(est)
        return [(str(n), "string" if str(n) in strings else "float64") for n in names], True
    if _is_text_vectorizer(est):
        return [("text", "string")], False
    n = getattr(est, "n_features_in_", None)
    if isinstance(n, int | np.integer):
        return [(f"f{i}", "float64") for i in range(int(n))], False
    return None, False


def _string_columns(est: Any) -> set[str]:
    """Columns that a fitted ColumnTransformer (first step) sends to a text vectorizer or to an encoder
    whose categories are strings: they hold text, not numbers."""
    transformers = getattr(_first_step(est), "transformers_", None)
    if not isinstance(transformers, list):
        return set()
    out: set[str] = set()
    for _, transformer, columns in transformers:
        if isinstance(columns, str):
            columns = [columns]
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            continue
        if _is_text_vectorizer(transformer) or _has_string_categories(transformer):
            out.update(columns)
    return out


def _is_text_vectorizer(est: Any) -> bool:
    return _qualname(_first_step(est)).startswith("sklearn.feature_extraction.text.")


def _has_string_categories(est: Any) -> bool:
    steps = getattr(est, "steps", None)
    parts = [s for _, s in steps] if isinstance(steps, list) else [est]
    for part in parts:
        categories = getattr(part, "categories_", None)
        if not isinstance(categories, list):
            continue
        if any(getattr(getattr(c, "dtype", None), "kind", "") in ("O", "U", "T") for c in categories):
            return True
    return False


def _feed(est: Any, inputs: Schema, names_fixed: bool) -> str:
    if names_fixed:
        return "frame"
    if len(inputs) == 1 and inputs.fields[0].dtype == "string":
        return "text"
    return "matrix" if inputs.is_numeric() else "object"


def _accepts_nan(est: Any) -> bool:
    """Whether NaN inputs are valid, by the estimator's tags; a pipeline walks its steps to an imputer."""
    steps = getattr(est, "steps", None)
    if isinstance(steps, list):
        for _, step in steps:
            if step is None or step == "passthrough":
                continue
            if _qualname(step).startswith("sklearn.impute."):
                return True
            if not _accepts_nan(step):
                return False
        return True
    try:
        return bool(est.__sklearn_tags__().input_tags.allow_nan)
    except AttributeError:
        return _qualname(est).startswith(("xgboost.", "lightgbm."))


def _detect_head(est: Any, ctx: LoadContext) -> Head:
    classes = getattr(est, "classes_", None)
    if classes is not None:
        if not isinstance(classes, np.ndarray) or classes.ndim != 1:
            raise ModelLoadError(
                f"{ctx.path}: multi-output classifiers are not supported; wrap the model "
                f"in a function model (augury.models.function_model)"
            )
        return Head(
            "classification", python_classes(classes), proba=callable(getattr(est, "predict_proba", None))
        )
    return Head(_estimator_type(est), n_values=_n_outputs(est))


def _estimator_type(est: Any) -> str:
    try:
        kind = est.__sklearn_tags__().estimator_type
    except AttributeError:
        kind = None
    return "regression" if kind == "regressor" else "other"


def _n_outputs(est: Any) -> int:
    """How many values the regressor predicts per row, as its fitted attributes say (default 1)."""
    final = _final_step(est)
    inner = getattr(final, "regressor_", None)
    if inner is not None:
        return _n_outputs(inner)
    n = getattr(final, "n_outputs_", None)
    if isinstance(n, int | np.integer):
        return int(n)
    coef = getattr(final, "coef_", None)
    if isinstance(coef, np.ndarray) and coef.ndim == 2:
        return int(coef.shape[0])
    estimators = getattr(final, "estimators_", None)
    if _qualname(final).endswith("MultiOutputRegressor") and isinstance(estimators, list):
        return len(estimators)
    return 1
