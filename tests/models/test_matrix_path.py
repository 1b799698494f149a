"""`matrix_predict`, the server's path for float64 rows, answers what `predict_checked` answers, to the bit.

The server scores a batch of cast rows as one float64 matrix when the model offers `matrix_predict`
(`augury.serve.scoring.Scorer`); the batch runner scores record batches with `predict_checked`. These
hold the two to one answer (DESIGN.md, invariant 1) on real models, with NaN, -0.0 and extreme values in
the rows, for every batch size from 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
)
from sklearn.linear_model import LinearRegression, LogisticRegression

from augury.models import Model, load_model, predict_checked
from augury.models.base import MatrixModel, predict_matrix_checked
from augury.schema import rows_to_batch
from augury.serve.scoring import Refused, Scorer

SPECIALS = [0.0, -0.0, math.nan, 1e-310, -1e300, 1e300, 3.5, -2.25]


def _rows(data: Any, n: int) -> list[list[float]]:
    """`n` rows of the data, every fourth value replaced by one of the special values."""
    rows: list[list[float]] = data.x[:n].tolist()
    for i, row in enumerate(rows):
        for j in range(len(row)):
            if (i + j) % 4 == 0:
                row[j] = SPECIALS[(i * 3 + j) % len(SPECIALS)]
    return rows


def _bits(values: list[Any]) -> list[Any]:
    """Floats as bit patterns (NaN == NaN, -0.0 != 0.0); other values as they are, with their types."""
    return [(type(v).__name__, np.float64(v).view(np.int64).item() if isinstance(v, float) else v)
            for v in values]


def _check(model: Model, rows: list[list[float]]) -> None:
    assert isinstance(model, MatrixModel)
    predict = model.matrix_predict()
    assert predict is not None
    for n in (1, 2, 3, 17, len(rows)):
        part = rows[:n]
        via_batch = predict_checked(model, rows_to_batch(part, model.info.inputs))
        via_matrix = predict_matrix_checked(model, predict, np.array(part, dtype=np.float64))
        assert [a.type for a in via_matrix] == via_batch.schema.types
        for j, column in enumerate(via_matrix):
            assert _bits(column.to_pylist()) == _bits(via_batch.column(j).to_pylist()), (n, j)
        answers = Scorer(model)(part)
        names = model.info.outputs.names
        assert not [a for a in answers if isinstance(a, Refused)]
        for name in names:
            served = [a[name] for a in answers if isinstance(a, dict)]
            assert _bits(served) == _bits(via_batch.column(name).to_pylist()), (n, name)


def _sklearn(path: Path, est: Any, x: np.ndarray, y: np.ndarray, **load: Any) -> Model:
    est.fit(x, y)
    joblib.dump(est, path)
    return load_model(path, **load)


CASES: dict[str, Callable[[Any], tuple[Any, Any]]] = {
    "hgb_binary": lambda d: (HistGradientBoostingClassifier(max_iter=20), d.y_bin),
    "hgb_strings": lambda d: (HistGradientBoostingClassifier(max_iter=10), d.y_str),
    "hgb_regressor": lambda d: (HistGradientBoostingRegressor(max_iter=20), d.y_reg),
    "forest": lambda d: (RandomForestClassifier(n_estimators=5, random_state=0), d.y_multi),
    "logistic": lambda d: (LogisticRegression(), d.y_bin),
    "linear": lambda d: (LinearRegression(), d.y_reg),
}


#: the cases with two evaluators (HistGradientBoosting: compiled or scikit-learn's) run with each
RUNS = [(c, "auto") for c in sorted(CASES)] + [(c, "library") for c in sorted(CASES) if c.startswith("hgb")]


@pytest.mark.parametrize(("case", "evaluator"), RUNS)
def test_sklearn_matrix_path(case: str, evaluator: str, data: Any, model_dir: Path) -> None:
    est, y = CASES[case](data)
    x = data.x.copy()
    x[::7, 1] = np.nan
    if case in ("forest", "logistic", "linear"):  # these take no NaN
        x = data.x
    model = _sklearn(model_dir / f"mp_{case}_{evaluator}.joblib", est, x, y, evaluator=evaluator)
    rows = _rows(data, 60)
    if case in ("forest", "logistic", "linear"):  # no NaN; a forest casts to float32 (1e300 overflows)
        rows = [[0.0 if math.isnan(v) else max(-1e30, min(v, 1e30)) for v in row] for row in rows]
    _check(model, rows)


def test_xgboost_matrix_path(data: Any, model_dir: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    path = model_dir / "mp_xgb.ubj"
    xgb.train({"objective": "multi:softprob", "num_class": 3, "max_depth": 2},
              xgb.DMatrix(data.x, label=data.y_multi), num_boost_round=5).save_model(str(path))
    _check(load_model(path), _rows(data, 60))


def test_lightgbm_matrix_path(data: Any, model_dir: Path) -> None:
    lgb = pytest.importorskip("lightgbm")
    path = model_dir / "mp_lgb.txt"
    params = {"objective": "binary", "num_leaves": 4, "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5}
    lgb.train(params, lgb.Dataset(data.x, data.y_bin), num_boost_round=5).save_model(str(path))
    _check(load_model(path), _rows(data, 60))


def test_a_model_fed_a_frame_offers_no_matrix_path(data: Any, model_dir: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(data.x, columns=["a", "b", "c", "d"])
    model = _sklearn(model_dir / "mp_frame.joblib", HistGradientBoostingClassifier(max_iter=5), frame,
                     data.y_bin)
    assert isinstance(model, MatrixModel) and model.matrix_predict() is None
    rows = _rows(data, 5)
    out = Scorer(model)(rows)
    expected = predict_checked(model, rows_to_batch(rows, model.info.inputs))
    assert [a["label"] for a in out if isinstance(a, dict)] == expected.column("label").to_pylist()


def test_a_broken_matrix_answer_is_a_prediction_error(data: Any, model_dir: Path) -> None:
    from augury.errors import PredictionError

    model = _sklearn(model_dir / "mp_broken.joblib", LinearRegression(), data.x, data.y_reg)
    x = np.zeros((3, 4))
    with pytest.raises(PredictionError, match="returned 2 rows for 3 inputs"):
        predict_matrix_checked(model, lambda m: [pa.array([1.0, 2.0])], x)
    with pytest.raises(PredictionError, match="returned 2 columns"):
        predict_matrix_checked(model, lambda m: [pa.array([1.0] * 3)] * 2, x)
    with pytest.raises(PredictionError, match="failed to predict: ValueError: no"):
        predict_matrix_checked(model, lambda m: (_ for _ in ()).throw(ValueError("no")), x)
