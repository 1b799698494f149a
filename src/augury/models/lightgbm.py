"""LightGBM native text models (``.txt``, ``.lgb``, ``.lgbm`` files that start with ``tree``).

Features are ``Booster.feature_name()``, float64, positional, and accept missing values (NaN). The
objective in the file's header decides the outputs: ``binary`` gives P(class 1), so ``proba_0 = 1 - p``
and ``proba_1 = p``; ``multiclass``/``multiclassova`` give one probability per class; the label is the
class of highest probability (ties to the first class), as ``LGBMClassifier.predict`` does. The
``regression*``, ``huber``, ``fair``, ``poisson``, ``quantile``, ``mape``, ``gamma`` and ``tweedie``
objectives are regressions; any other (ranking, cross-entropy, custom) gives ``value`` with task "other".
A native file stores class indices only: the labels are 0..k-1 unless the manifest lists ``classes``.

Scoring uses ``Booster.predict`` on a float64 array (its default number of iterations: the best one when
the file records it); `threads` sets ``num_threads`` (default 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from augury.errors import MissingExtraError, ModelLoadError
from augury.models._common import (
    Array,
    BoosterModel,
    Head,
    LoadContext,
    booster_arrays,
)
from augury.models.base import Model, ModelInfo
from augury.models.evaluator import LIGHTGBM

_REGRESSION = (
    "regression",
    "regression_l1",
    "huber",
    "fair",
    "poisson",
    "quantile",
    "mape",
    "gamma",
    "tweedie",
)
_HEADER_BYTES = 1 << 16


def load_lightgbm(ctx: LoadContext) -> Model:
    """Load a LightGBM text model file."""
    header = _read_header(ctx)
    try:
        import lightgbm as lgb
    except ImportError as exc:
        raise MissingExtraError(f"loading {ctx.path}", "lightgbm", "lightgbm") from exc
    try:
        booster = lgb.Booster(model_file=str(ctx.path))
        names = [str(n) for n in booster.feature_name()]
        per_iteration = int(booster.num_model_per_iteration())
    except Exception as exc:
        raise ModelLoadError(
            f"{ctx.path} is not a readable LightGBM model ({type(exc).__name__}: {exc}); "
            f"save it with Booster.save_model('model.txt')"
        ) from exc
    objective = header.get("objective", "").split(" ")[0]
    detected = _detect_head(objective, per_iteration)
    inputs = ctx.input_schema([(n, "float64") for n in names], True, names_fixed=False)
    head = ctx.head(detected, classes_known=False)
    info = ctx.info("lightgbm", inputs, head, {"objective": objective}, evaluator=LIGHTGBM)
    return LightGBMModel(booster, info, ctx.threads or 1)


def _read_header(ctx: LoadContext) -> dict[str, str]:
    """The ``key=value`` lines before the first tree; `ModelLoadError` unless the file starts ``tree``."""
    try:
        with ctx.path.open("rb") as fh:
            head = fh.read(_HEADER_BYTES)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {ctx.path}: {exc}") from exc
    text = head.decode("utf-8", errors="replace")
    if not text.startswith("tree"):
        raise ModelLoadError(
            f"{ctx.path} is not a LightGBM text model (it does not start with 'tree'); "
            f"save the model with Booster.save_model('model.txt')"
        )
    out: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        if not line or line.startswith("Tree="):
            break
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def _detect_head(objective: str, per_iteration: int) -> Head:
    if objective == "binary":
        return Head("classification", (0, 1), proba=True)
    if objective in ("multiclass", "multiclassova"):
        return Head("classification", tuple(range(per_iteration)), proba=True)
    task = "regression" if objective in _REGRESSION else "other"
    return Head(task, n_values=1)


class LightGBMModel(BoosterModel):
    """A native LightGBM booster behind the `Model` contract."""

    def __init__(self, booster: Any, info: ModelInfo, threads: int) -> None:
        super().__init__(booster, info)
        self._threads = threads

    def _arrays(self, x: Array) -> list[pa.Array]:
        raw = np.asarray(self._booster.predict(x, num_threads=self._threads), dtype=np.float64)
        return booster_arrays(self._info.outputs, self._classes, raw, x.shape[0])
