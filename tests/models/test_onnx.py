"""ONNX models exported with skl2onnx (or built with onnx.helper), run with onnxruntime."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from augury.errors import ConfigError, ModelLoadError, PredictionError
from augury.models import load_model, predict_checked
from augury.schema import Schema

Same = Callable[..., pa.RecordBatch]


def _export(est: Any, path: Path, tensor: Any, zipmap: bool = False) -> Path:
    options = {id(est): {"zipmap": zipmap}} if hasattr(est, "classes_") else None
    onx = to_onnx(est, initial_types=[("input", tensor([None, 4]))], options=options)
    path.write_bytes(onx.SerializeToString())
    return path


def _session(path: Path) -> Any:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def float_classifier(data: Any, model_dir: Path) -> Path:
    est = LogisticRegression(max_iter=1000).fit(data.x, data.y_multi)
    return _export(est, model_dir / "lr32.onnx", FloatTensorType)


def test_float32_classifier(float_classifier: Path, data: Any, same_answer: Same) -> None:
    model = load_model(float_classifier)
    info = model.info
    assert (info.format, info.task, info.classes) == ("onnx", "classification", (0, 1, 2))
    assert info.evaluator == "onnxruntime"
    assert info.inputs == Schema.of([(f"f{i}", "float32") for i in range(4)])
    assert info.outputs.names == ["label", "proba_0", "proba_1", "proba_2"]
    batch = data.batch(dtype=pa.float32())
    out = same_answer(model, batch, exact=True)  # a single row is padded: float32 answers match exactly
    label, proba = _session(float_classifier).run(None, {"input": data.x.astype(np.float32)})
    assert out.column("label").to_pylist() == label.tolist()
    np.testing.assert_array_equal(out.column("proba_2").to_numpy(), proba[:, 2].astype(np.float64))


def test_zipmap_classifier_with_string_classes(data: Any, model_dir: Path, same_answer: Same) -> None:
    est = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(data.x, data.y_str)
    path = _export(est, model_dir / "forest_zipmap.onnx", FloatTensorType, zipmap=True)
    model = load_model(path)
    assert model.info.classes == ("high", "low", "mid")
    assert model.info.outputs["label"].dtype == "string"
    out = same_answer(model, data.batch(dtype=pa.float32()), exact=True)
    assert out.column("label").to_pylist() == est.predict(data.x.astype(np.float32)).tolist()


def test_double_regressor(data: Any, model_dir: Path, same_answer: Same) -> None:
    est = LinearRegression().fit(data.x, data.y_reg)
    model = load_model(_export(est, model_dir / "linear64.onnx", DoubleTensorType))
    assert model.info.task == "regression"
    assert model.info.inputs == Schema.of([(f"f{i}", "float64") for i in range(4)])
    assert model.info.outputs.names == ["value"]
    out = same_answer(model, data.batch(), exact=False)
    np.testing.assert_allclose(out.column("value").to_numpy(), est.predict(data.x), rtol=1e-9)


def test_double_classifier_classes_from_the_label_table(data: Any, model_dir: Path,
                                                        same_answer: Same) -> None:
    est = LogisticRegression(max_iter=1000).fit(data.x, data.y_multi + 10)
    model = load_model(_export(est, model_dir / "lr64.onnx", DoubleTensorType))
    assert model.info.classes == (10, 11, 12)
    out = same_answer(model, data.batch(), exact=False)
    assert out.column("label").to_pylist() == est.predict(data.x).tolist()
    np.testing.assert_allclose(out.column("proba_11").to_numpy(), est.predict_proba(data.x)[:, 1], rtol=1e-9)


def test_manifest_renames_positional_features_and_sets_classes(float_classifier: Path, tmp_path: Path,
                                                              manifest: Any, data: Any) -> None:
    path = tmp_path / "lr.onnx"
    path.write_bytes(float_classifier.read_bytes())
    inputs = "".join(f'[[inputs]]\nname = "{n}"\ndtype = "float32"\n' for n in "abcd")
    manifest(path, 'classes = [0, 1, 2]\noutputs = "label"\n' + inputs)
    model = load_model(path)
    assert model.info.inputs.names == ["a", "b", "c", "d"]
    assert model.info.outputs.names == ["label"]
    assert predict_checked(model, data.batch(list("abcd"), pa.float32())).num_rows == len(data.x)
    manifest(path, 'classes = ["x", "y"]\n')
    with pytest.raises(ConfigError, match="do not match the model's classes"):
        load_model(path)


def _two_input_graph(path: Path) -> Path:
    """value = 2 * a + b, with a and b float [N, 1] inputs; plus a string input passed to an output."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 1])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1])
    out = helper.make_tensor_value_info("value", TensorProto.FLOAT, [None, 1])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    nodes = [helper.make_node("Mul", ["a", "two"], ["a2"]), helper.make_node("Add", ["a2", "b"], ["value"])]
    graph = helper.make_graph(nodes, "two_inputs", [a, b], [out], initializer=[two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_one_feature_per_named_input(tmp_path: Path, data: Any, same_answer: Same) -> None:
    model = load_model(_two_input_graph(tmp_path / "two.onnx"))
    assert model.info.inputs == Schema.of([("a", "float32"), ("b", "float32")])
    columns = [pa.array(data.x[:, 1], pa.float32()), pa.array(data.x[:, 0], pa.float32())]
    batch = pa.RecordBatch.from_arrays(columns, names=["b", "a"])
    out = same_answer(model, batch, exact=True)
    expected = 2 * data.x[:, 0].astype(np.float32) + data.x[:, 1].astype(np.float32)
    np.testing.assert_array_equal(out.column("value").to_numpy(), expected.astype(np.float64))


def test_string_and_float_inputs(tmp_path: Path, same_answer: Same) -> None:
    """value = code(text) + x, where code maps 'good' to 1, 'bad' to -1 and any other word to 0."""
    inputs = [helper.make_tensor_value_info("text", TensorProto.STRING, [None]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])]
    nodes = [helper.make_node("LabelEncoder", ["text"], ["code"], domain="ai.onnx.ml",
                              keys_strings=["good", "bad"], values_floats=[1.0, -1.0], default_float=0.0),
             helper.make_node("Add", ["code", "x"], ["value"])]
    output = helper.make_tensor_value_info("value", TensorProto.FLOAT, [None])
    graph = helper.make_graph(nodes, "text_and_number", inputs, [output])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    onx = helper.make_model(graph, opset_imports=opsets)
    onx.ir_version = 8
    (tmp_path / "text.onnx").write_bytes(onx.SerializeToString())
    model = load_model(tmp_path / "text.onnx")
    assert model.info.inputs == Schema.of([("text", "string"), ("x", "float32")])
    words = ["good", "bad", "meh"] * 20
    batch = pa.RecordBatch.from_arrays([pa.array(words), pa.array(np.arange(60) / 4, pa.float32())],
                                       names=["text", "x"])
    out = same_answer(model, batch, exact=True)
    assert out.column("value").to_pylist()[:3] == [1.0, -0.75, 0.5]


def test_corrupt_onnx_file(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError, match=r"bad\.onnx is not a valid ONNX model"):
        load_model(tmp_path / "bad.onnx")


def test_classes_are_read_from_the_graph(float_classifier: Path) -> None:
    labels = [a for n in onnx.load(str(float_classifier)).graph.node for a in n.attribute
              if a.name.startswith("classlabels")]
    assert labels, "skl2onnx stores the class labels on the classifier node"
    assert load_model(float_classifier).info.classes == (0, 1, 2)


def test_classes_without_the_onnx_package(float_classifier: Path, tmp_path: Path, manifest: Any, data: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lr.onnx"
    path.write_bytes(float_classifier.read_bytes())
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelLoadError, match=r"list them as 'classes' in .*lr\.augury\.toml"):
        load_model(path)
    manifest(path, 'classes = ["a", "b", "c"]\n')
    with pytest.raises(ModelLoadError, match="do not match the label output type"):
        load_model(path)
    manifest(path, "classes = [0, 1, 2]\n")
    assert predict_checked(load_model(path), data.batch(dtype=pa.float32())).num_rows == len(data.x)
    manifest(path, "classes = [5, 6, 7]\n")
    with pytest.raises(PredictionError, match=r"holds 0, 1, 2, not among the classes \[5, 6, 7\]"):
        predict_checked(load_model(path), data.batch(dtype=pa.float32()))
