"""Python functions as models: the decorator and ``module:function`` references."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from augury.errors import ConfigError, ModelLoadError, PredictionError
from augury.models import FunctionModel, function_model, load_model, predict_checked
from augury.schema import Field, Schema

Same = Callable[..., pa.RecordBatch]

MODULE = '''
import numpy as np
from augury.models import function_model


@function_model(inputs={"x": "float64", "text": "string"}, outputs={"value": "float64", "words": "int64"},
                version="1", task="regression")
def score(batch):
    words = np.array([len(t.split()) for t in batch["text"]], dtype=np.int64)
    return {"value": batch["x"] * 2.0 + words, "words": words}


@function_model(inputs={"x": "float"}, outputs={"value": "float"}, allow_missing=["x"])
def double(batch):
    return np.nan_to_num(batch["x"], nan=-1.0) * 2.0


@function_model(inputs={"x": "float64"}, outputs={"value": "float64"})
def too_short(batch):
    return batch["x"][:-1]


@function_model(inputs={"x": "float64"}, outputs={"value": "float64"})
def wrong_keys(batch):
    return {"score": batch["x"]}


def plain(batch):
    return batch["x"]


NOT_CALLABLE = 3
'''


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"scoring_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _batch(data: Any) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(data.x[:, 0]), pa.array(data.texts)], names=["x", "text"])


def test_load_and_predict(module: str, data: Any, same_answer: Same) -> None:
    model = load_model(f"{module}:score")
    info = model.info
    assert (info.name, info.version, info.format, info.task) == ("score", "1", "function", "regression")
    assert info.evaluator == "python"
    assert info.source == f"{module}:score"
    assert info.inputs == Schema.of([("x", "float64"), ("text", "string")])
    assert info.outputs == Schema.of([("value", "float64"), ("words", "int64")])
    out = same_answer(model, _batch(data), exact=True)
    assert out.column("words").to_pylist() == [4] * len(data.texts)
    np.testing.assert_array_equal(out.column("value").to_numpy(), data.x[:, 0] * 2.0 + 4)


def test_single_array_output_missing_values_and_source_hash(module: str) -> None:
    model = load_model(f"{module}:double", name="doubler")
    assert model.info.name == "doubler"
    assert model.info.inputs.fields == (Field("x", "float64", allow_missing=True),)
    assert model.info.version.startswith("sha256:") and len(model.info.version) == 7 + 16
    assert model.info.version == load_model(f"{module}:double").info.version
    out = predict_checked(model, pa.RecordBatch.from_arrays([pa.array([1.5, float("nan")])], names=["x"]))
    assert out.column("value").to_pylist() == [3.0, -2.0]


def test_decorated_function_is_still_callable() -> None:
    @function_model(inputs={"a": "int"}, outputs={"b": "int"})
    def inc(batch: dict[str, np.ndarray]) -> np.ndarray:
        return batch["a"] + 1

    assert isinstance(inc, FunctionModel)
    np.testing.assert_array_equal(inc({"a": np.array([1, 2])}), [2, 3])
    model = inc.to_model()
    assert model.info.name == "inc"
    out = predict_checked(model, pa.RecordBatch.from_arrays([pa.array([4])], names=["a"]))
    assert out.to_pylist() == [{"b": 5}]


def test_decorator_rejects_bad_declarations() -> None:
    with pytest.raises(ConfigError, match="unknown dtype 'float128'"):
        function_model(inputs={"a": "float128"}, outputs={"b": "float"})
    with pytest.raises(ConfigError, match="task"):
        function_model(inputs={"a": "float"}, outputs={"b": "float"}, task="ranking")
    with pytest.raises(ConfigError, match="allow_missing names unknown input"):
        function_model(inputs={"a": "float"}, outputs={"b": "float"}, allow_missing=["z"])


def test_wrong_output_shape_or_keys(module: str) -> None:
    batch = pa.RecordBatch.from_arrays([pa.array([1.0, 2.0])], names=["x"])
    with pytest.raises(PredictionError, match=r"output 'value' has shape \(1,\), expected \(2,\)"):
        predict_checked(load_model(f"{module}:too_short"), batch)
    with pytest.raises(PredictionError, match=r"returned \['score'\], expected \['value'\]"):
        predict_checked(load_model(f"{module}:wrong_keys"), batch)


def test_plain_callable_is_refused(module: str) -> None:
    with pytest.raises(ModelLoadError, match=r"plain callable.*@augury\.models\.function_model"):
        load_model(f"{module}:plain")
    with pytest.raises(ModelLoadError, match=r"is not callable \(a int\)"):
        load_model(f"{module}:NOT_CALLABLE")


def test_bad_references(module: str) -> None:
    with pytest.raises(ModelLoadError, match="no module named 'no_such_module_xyz'"):
        load_model("no_such_module_xyz:score")
    with pytest.raises(ModelLoadError, match=f"module '{module}' has no attribute 'nope'"):
        load_model(f"{module}:nope")


def test_module_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_scoring.py").write_text(textwrap.dedent("""
        import no_such_dependency_xyz
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"importing 'broken_scoring' failed.*no_such_dependency_xyz"):
        load_model("broken_scoring:score")
