"""XGBoost native models (``.ubj``, and ``.json`` files whose top level has a ``learner`` key).

Features are the booster's ``feature_names`` (else ``f0..f{n-1}``), float64, positional, and accept
missing values (NaN). The objective decides the outputs: ``binary:logistic`` gives P(class 1), so
``proba_0 = 1 - p`` and ``proba_1 = p``; ``multi:softprob`` gives one probability per class; the label is
the class of highest probability (ties to the first class), as ``XGBClassifier.predict`` does.
``multi:softmax`` and ``binary:hinge`` give a label only. ``reg:*`` and ``count:*`` are regressions; any
other objective (``rank:*``, ``survival:*``, ``binary:logitraw``...) gives ``value`` with task "other".
A native file stores class indices only: the labels are 0..k-1 unless the manifest lists ``classes``.

Scoring uses ``Booster.inplace_predict`` on a float64 array, with the trees up to ``best_iteration`` when
the file records one (early stopping; as ``XGBClassifier.predict`` does), else all; `threads` sets ``nthread``
(default 1). Tree ensembles score each row independently, so answers do not depend on the batch.
"""

from __future__ import annotations

import json
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
    classifier_arrays,
)
from augury.models.base import Model, ModelInfo
from augury.models.evaluator import XGBOOST

_LABEL_ONLY = ("multi:softmax", "binary:hinge")


def load_xgboost(ctx: LoadContext) -> Model:
    """Load a native XGBoost model file (UBJSON or JSON)."""
    if ctx.path.suffix.lower() == ".json":
        _check_json(ctx)
    try:
        import xgboost as xgb
    except ImportError as exc:
        raise MissingExtraError(f"loading {ctx.path}", "xgboost", "xgboost") from exc
    try:
        booster = xgb.Booster(model_file=str(ctx.path))
        config = json.loads(booster.save_config())
        learner = config["learner"]
        objective = str(learner["objective"]["name"])
        params = learner["learner_model_param"]
        num_class = int(params.get("num_class", "0"))
        num_target = int(params.get("num_target", "1"))
        names = booster.feature_names or [f"f{i}" for i in range(booster.num_features())]
        best = booster.attr("best_iteration")
        iterations = (0, int(best) + 1) if best is not None else (0, 0)
        booster.set_param({"nthread": ctx.threads or 1})
    except Exception as exc:
        raise ModelLoadError(
            f"{ctx.path} is not a readable XGBoost model ({type(exc).__name__}: {exc}); "
            f"save it with Booster.save_model('model.ubj')"
        ) from exc
    detected = _detect_head(objective, num_class, num_target)
    inputs = ctx.input_schema([(str(n), "float64") for n in names], True, names_fixed=False)
    head = ctx.head(detected, classes_known=False)
    info = ctx.info("xgboost", inputs, head, {"objective": objective, "iteration_range": iterations},
                    evaluator=XGBOOST)
    return XGBoostModel(booster, info, objective, iterations)


def _check_json(ctx: LoadContext) -> None:
    try:
        with ctx.path.open("rb") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{ctx.path} is not a JSON XGBoost model: {exc}") from exc
    if not isinstance(doc, dict) or "learner" not in doc:
        raise ModelLoadError(
            f"{ctx.path} is JSON but not an XGBoost model (no top-level 'learner' key); "
            f"augury reads .json files saved by XGBoost's Booster.save_model"
        )


def _detect_head(objective: str, num_class: int, num_target: int) -> Head:
    if objective == "binary:logistic":
        return Head("classification", (0, 1), proba=True)
    if objective == "binary:hinge":
        return Head("classification", (0, 1), proba=False)
    if objective.startswith("multi:"):
        return Head("classification", tuple(range(num_class)), proba=objective == "multi:softprob")
    task = "regression" if objective.startswith(("reg:", "count:")) else "other"
    return Head(task, n_values=max(num_target, 1))


class XGBoostModel(BoosterModel):
    """A native XGBoost booster behind the `Model` contract."""

    def __init__(self, booster: Any, info: ModelInfo, objective: str, iterations: tuple[int, int]) -> None:
        super().__init__(booster, info)
        self._iterations = iterations
        self._objective = objective

    def _arrays(self, x: Array) -> list[pa.Array]:
        outputs = self._info.outputs
        raw = np.asarray(
            self._booster.inplace_predict(x, iteration_range=self._iterations, validate_features=False),
            dtype=np.float64,
        )
        if self._classes is not None and self._objective in _LABEL_ONLY:
            return classifier_arrays(outputs, self._classes[raw.reshape(-1).astype(np.int64)], None)
        return booster_arrays(outputs, self._classes, raw, x.shape[0])
