"""XGBoost native model files (.ubj and .json)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import xgboost as xgb

from augury.errors import ConfigError, ModelLoadError
from augury.models import load_model, predict_checked

Same = Callable[..., pa.RecordBatch]


def _train(data: Any, y: np.ndarray, params: dict[str, Any], path: Path, **dmatrix: Any) -> xgb.Booster:
    booster = xgb.train({"max_depth": 2, "nthread": 1, **params}, xgb.DMatrix(data.x, y, **dmatrix), 5)
    booster.save_model(str(path))
    return booster


def _nan_batch(data: Any, names: list[str]) -> tuple[np.ndarray, pa.RecordBatch]:
    x = data.x.copy()
    x[::5, 2] = np.nan
    return x, pa.RecordBatch.from_arrays([pa.array(x[:, j]) for j in range(4)], names=names)


@pytest.mark.parametrize("suffix", [".ubj", ".json"])
def test_binary_classifier(data: Any, model_dir: Path, suffix: str, same_answer: Same) -> None:
    path = model_dir / f"xgb_binary{suffix}"
    booster = _train(data, data.y_bin, {"objective": "binary:logistic"}, path)
    model = load_model(path)
    info = model.info
    assert (info.format, info.task, info.classes) == ("xgboost", "classification", (0, 1))
    assert info.evaluator == "xgboost"
    assert [(f.name, f.dtype) for f in info.inputs.fields] == [(f"f{i}", "float64") for i in range(4)]
    assert all(f.allow_missing for f in info.inputs.fields)
    assert info.outputs.names == ["label", "proba_0", "proba_1"]
    assert info.meta["objective"] == "binary:logistic"
    x, batch = _nan_batch(data, info.inputs.names)
    out = same_answer(model, batch, exact=True)
    p = booster.predict(xgb.DMatrix(x)).astype(np.float64)
    np.testing.assert_array_equal(out.column("proba_1").to_numpy(), p)
    np.testing.assert_array_equal(out.column("proba_0").to_numpy(), 1.0 - p)
    assert out.column("label").to_pylist() == (p > 0.5).astype(int).tolist()


def test_multiclass_with_feature_names_and_manifest_classes(data: Any, model_dir: Path, manifest: Any,
                                                            same_answer: Same) -> None:
    path = model_dir / "xgb_multi.ubj"
    names = ["age", "income", "tenure", "visits"]
    booster = _train(data, data.y_multi, {"objective": "multi:softprob", "num_class": 3}, path,
                     feature_names=names)
    model = load_model(path)
    assert model.info.inputs.names == names and model.info.classes == (0, 1, 2)
    manifest(path, 'classes = ["low", "mid", "high"]\n')
    model = load_model(path)
    assert model.info.outputs.names == ["label", "proba_low", "proba_mid", "proba_high"]
    out = same_answer(model, data.batch(names), exact=True)
    proba = booster.predict(xgb.DMatrix(data.x, feature_names=names))
    expected = np.array(["low", "mid", "high"])[np.argmax(proba, axis=1)]
    assert out.column("label").to_pylist() == expected.tolist()
    np.testing.assert_array_equal(out.column("proba_high").to_numpy(), proba[:, 2].astype(np.float64))
    manifest(path, 'classes = ["a", "b"]\n')
    with pytest.raises(ConfigError, match="do not match"):
        load_model(path)


def test_softmax_gives_label_only(data: Any, tmp_path: Path) -> None:
    path = tmp_path / "softmax.json"
    booster = _train(data, data.y_multi, {"objective": "multi:softmax", "num_class": 3}, path)
    model = load_model(path)
    assert model.info.outputs.names == ["label"]
    out = predict_checked(model, data.batch())
    assert out.column("label").to_pylist() == booster.predict(xgb.DMatrix(data.x)).astype(int).tolist()


def test_regressor(data: Any, model_dir: Path, same_answer: Same) -> None:
    path = model_dir / "xgb_reg.ubj"
    booster = _train(data, data.y_reg, {"objective": "reg:squarederror"}, path)
    model = load_model(path, threads=2)
    assert model.info.task == "regression" and model.info.outputs.names == ["value"]
    x, batch = _nan_batch(data, model.info.inputs.names)
    out = same_answer(model, batch, exact=True)
    expected = booster.predict(xgb.DMatrix(x)).astype(np.float64)
    np.testing.assert_array_equal(out.column("value").to_numpy(), expected)


def test_early_stopped_model_uses_its_best_iteration(data: Any, tmp_path: Path) -> None:
    train, valid = xgb.DMatrix(data.x[:150], data.y_reg[:150]), xgb.DMatrix(data.x[150:], data.y_reg[150:])
    booster = xgb.train({"max_depth": 2, "nthread": 1, "learning_rate": 1.0}, train, 50,
                        evals=[(valid, "valid")], early_stopping_rounds=2, verbose_eval=False)
    assert booster.best_iteration + 1 < booster.num_boosted_rounds()
    booster.save_model(str(tmp_path / "early.ubj"))
    out = predict_checked(load_model(tmp_path / "early.ubj"), data.batch())
    best = booster.predict(xgb.DMatrix(data.x), iteration_range=(0, booster.best_iteration + 1))
    np.testing.assert_array_equal(out.column("value").to_numpy(), best.astype(np.float64))


def test_corrupt_ubj(tmp_path: Path) -> None:
    (tmp_path / "bad.ubj").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ModelLoadError, match=r"bad\.ubj is not a readable XGBoost model"):
        load_model(tmp_path / "bad.ubj")


def test_json_that_is_not_xgboost(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"threshold": 0.5}')
    with pytest.raises(ModelLoadError, match=r"config\.json is JSON but not an XGBoost model"):
        load_model(tmp_path / "config.json")
    (tmp_path / "broken.json").write_text('{"learner": ')
    with pytest.raises(ModelLoadError, match=r"broken\.json is not a JSON XGBoost model"):
        load_model(tmp_path / "broken.json")
