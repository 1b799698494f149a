"""LightGBM native text model files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from augury.errors import ModelLoadError
from augury.models import load_model

Same = Callable[..., pa.RecordBatch]


def _train(data: Any, y: np.ndarray, params: dict[str, Any], path: Path) -> lgb.Booster:
    booster = lgb.train({"num_leaves": 4, "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5, **params},
                        lgb.Dataset(data.x, y), num_boost_round=5)
    booster.save_model(str(path))
    return booster


@pytest.mark.parametrize("suffix", [".txt", ".lgb", ".lgbm"])
def test_binary_classifier(data: Any, model_dir: Path, suffix: str, same_answer: Same) -> None:
    path = model_dir / f"lgb_binary{suffix}"
    booster = _train(data, data.y_bin, {"objective": "binary"}, path)
    model = load_model(path)
    info = model.info
    assert (info.format, info.task, info.classes) == ("lightgbm", "classification", (0, 1))
    assert info.evaluator == "lightgbm"
    assert [(f.name, f.dtype) for f in info.inputs.fields] == [(f"Column_{i}", "float64") for i in range(4)]
    assert all(f.allow_missing for f in info.inputs.fields)
    assert info.outputs.names == ["label", "proba_0", "proba_1"]
    x = data.x.copy()
    x[::6, 0] = np.nan
    batch = pa.RecordBatch.from_arrays([pa.array(x[:, j]) for j in range(4)], names=info.inputs.names)
    out = same_answer(model, batch, exact=True)
    p = np.asarray(booster.predict(x))
    np.testing.assert_array_equal(out.column("proba_1").to_numpy(), p)
    assert out.column("label").to_pylist() == (p > 0.5).astype(int).tolist()


def test_multiclass_with_manifest_classes(data: Any, model_dir: Path, manifest: Any,
                                          same_answer: Same) -> None:
    path = model_dir / "lgb_multi.txt"
    booster = _train(data, data.y_multi, {"objective": "multiclass", "num_class": 3}, path)
    manifest(path, 'classes = ["low", "mid", "high"]\nname = "tiers"\n')
    model = load_model(path)
    assert model.info.name == "tiers"
    assert model.info.outputs.names == ["label", "proba_low", "proba_mid", "proba_high"]
    out = same_answer(model, data.batch(model.info.inputs.names), exact=True)
    proba = np.asarray(booster.predict(data.x))
    assert out.column("label").to_pylist() == np.array(["low", "mid", "high"])[proba.argmax(axis=1)].tolist()
    np.testing.assert_array_equal(out.column("proba_mid").to_numpy(), proba[:, 1])


def test_regressor(data: Any, model_dir: Path, same_answer: Same) -> None:
    path = model_dir / "lgb_reg.txt"
    booster = _train(data, data.y_reg, {"objective": "regression"}, path)
    model = load_model(path)
    assert model.info.task == "regression" and model.info.outputs.names == ["value"]
    out = same_answer(model, data.batch(model.info.inputs.names), exact=True)
    np.testing.assert_array_equal(out.column("value").to_numpy(), booster.predict(data.x))


def test_text_file_that_is_not_lightgbm(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ModelLoadError, match=r"notes\.txt is not a LightGBM text model"):
        load_model(tmp_path / "notes.txt")


def test_corrupt_lightgbm_file(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("tree\nversion=v4\nnum_class=one\n\nTree=0\nnonsense\n")
    with pytest.raises(ModelLoadError, match=r"bad\.txt is not a readable LightGBM model"):
        load_model(tmp_path / "bad.txt")
