"""The manifest beside a model file: parsing, validation, and how it shapes the loaded model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from augury.errors import ConfigError
from augury.models import load_model, manifest_path, read_manifest
from augury.models.manifest import InputSpec
from augury.schema import Field


def test_manifest_path_is_beside_the_model() -> None:
    assert manifest_path(Path("/m/churn.joblib")) == Path("/m/churn.augury.toml")


def test_no_manifest(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "model.onnx") is None


def test_full_manifest(tmp_path: Path, manifest: Any) -> None:
    path = manifest(tmp_path / "m.onnx", '''
name = "churn"
version = 3
task = "classification"
outputs = "label"
classes = ["no", "yes"]

[[inputs]]
name = "age"
dtype = "int"

[[inputs]]
name = "plan"
dtype = "text"
allow_missing = true
''')
    m = read_manifest(tmp_path / "m.onnx")
    assert m is not None and m.path == path
    assert (m.name, m.version, m.task, m.outputs, m.classes) == ("churn", "3", "classification", "label",
                                                                  ("no", "yes"))
    assert m.inputs == (InputSpec("age", "int64", None), InputSpec("plan", "string", True))


@pytest.mark.parametrize(("text", "message"), [
    ('owner = "me"\n', r"m\.augury\.toml: unknown key 'owner'"),
    ('[[inputs]]\nname = "a"\ndtype = "float"\nunit = "cm"\n',
     r"m\.augury\.toml: unknown key 'unit' in inputs\[0\]"),
    ('[[inputs]]\nname = "a"\ndtype = "complex"\n', r"m\.augury\.toml: input 'a': unknown dtype 'complex'"),
    ('[[inputs]]\nname = "a"\n', r"input 'a' needs a 'dtype'"),
    ('[[inputs]]\nname = "a"\ndtype = "float"\n[[inputs]]\nname = "a"\ndtype = "float"\n', "duplicate input"),
    ('task = "ranking"\n', r"'task' must be one of classification, regression, other"),
    ('outputs = "logits"\n', r"'outputs' must be one of label, proba"),
    ('classes = []\n', r"'classes' must be a non-empty list"),
    ('classes = ["a", "a"]\n', r"'classes' has duplicates"),
    ('name = 5\n', r"'name' must be a non-empty string"),
    ('name = "unclosed\n', r"m\.augury\.toml is not valid TOML"),
])
def test_invalid_manifest(tmp_path: Path, manifest: Any, text: str, message: str) -> None:
    manifest(tmp_path / "m.joblib", text)
    with pytest.raises(ConfigError, match=message):
        read_manifest(tmp_path / "m.joblib")


@pytest.fixture
def classifier(data: Any, tmp_path: Path) -> Path:
    path = tmp_path / "clf.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(data.x, data.y_bin), path)
    return path


def test_manifest_inputs_rename_positional_features(classifier: Path, manifest: Any) -> None:
    manifest(classifier, "".join(f'[[inputs]]\nname = "{n}"\ndtype = "float64"\n' for n in "abcd"))
    assert load_model(classifier).info.inputs.names == ["a", "b", "c", "d"]


def test_manifest_input_count_must_match(classifier: Path, manifest: Any) -> None:
    manifest(classifier, '[[inputs]]\nname = "a"\ndtype = "float64"\n')
    with pytest.raises(ConfigError, match="declares 1 inputs, the model takes 4"):
        load_model(classifier)


def test_manifest_allow_missing_overrides_the_model(classifier: Path, manifest: Any) -> None:
    flags = {"a": "true", "b": "false", "c": "false", "d": "false"}
    manifest(classifier, "".join(f'[[inputs]]\nname = "{n}"\ndtype = "float64"\nallow_missing = {flag}\n'
                                 for n, flag in flags.items()))
    fields = load_model(classifier).info.inputs.fields
    assert fields[0] == Field("a", "float64", True) and not fields[1].allow_missing


def test_manifest_task_must_agree(classifier: Path, data: Any, tmp_path: Path, manifest: Any) -> None:
    manifest(classifier, 'task = "regression"\n')
    with pytest.raises(ConfigError, match="task 'regression' does not match"):
        load_model(classifier)
    manifest(classifier, 'task = "other"\n')
    assert load_model(classifier).info.task == "other"
    regressor = tmp_path / "reg.joblib"
    joblib.dump(LinearRegression().fit(data.x, data.y_reg), regressor)
    manifest(regressor, 'outputs = "label"\n')
    with pytest.raises(ConfigError, match="'outputs' applies to classifiers"):
        load_model(regressor)
    manifest(regressor, 'classes = [0, 1]\n')
    with pytest.raises(ConfigError, match=r"'classes' given but .* is not a classifier"):
        load_model(regressor)


def test_manifest_classes_must_repeat_stored_classes(classifier: Path, manifest: Any) -> None:
    manifest(classifier, "classes = [0, 1]\n")
    assert load_model(classifier).info.classes == (0, 1)
    manifest(classifier, 'classes = ["no", "yes"]\n')
    with pytest.raises(ConfigError, match=r"'classes' \['no', 'yes'\] do not match the model's classes"):
        load_model(classifier)
