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


# -- which file a manifest describes (issue 10: one manifest was applied to every file of its stem) ------


@pytest.fixture
def bc_pipe(data: Any, tmp_path: Path) -> tuple[Path, Path]:
    """The issue's folder: one pipeline saved as ``bc_pipe.onnx`` and as ``bc_pipe.joblib``."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(data.x, data.y_bin)
    onnx = tmp_path / "bc_pipe.onnx"
    onnx.write_bytes(to_onnx(est, initial_types=[("input", FloatTensorType([None, 4]))],
                             options={"zipmap": False}).SerializeToString())
    pickled = tmp_path / "bc_pipe.joblib"
    joblib.dump(est, pickled)
    return onnx, pickled


ONNX_MANIFEST = 'name = "bc"\nversion = "onnx-1"\n' + "".join(
    f'[[inputs]]\nname = "{n}"\ndtype = "float32"\n' for n in ("a", "b", "c", "d"))


def test_a_stem_manifest_without_file_is_refused_when_two_files_share_the_stem(
        bc_pipe: tuple[Path, Path], manifest: Any) -> None:
    onnx, pickled = bc_pipe
    manifest(onnx, ONNX_MANIFEST)  # written for the ONNX file, before `file` existed
    for path in (onnx, pickled):
        with pytest.raises(ConfigError) as refused:
            load_model(path)
        assert str(refused.value) == (
            f"manifest {manifest_path(onnx)} does not say which model file it describes, and "
            f"{path.name}, {(pickled if path == onnx else onnx).name} share its stem; add the line "
            f'file = "{path.name}" to it if it describes {path.name} (or give each file its own manifest, '
            "<file name>.augury.toml)")


def test_a_manifest_applies_to_the_file_it_names_only(bc_pipe: tuple[Path, Path], manifest: Any) -> None:
    onnx, pickled = bc_pipe
    manifest(onnx, f'file = "{onnx.name}"\n' + ONNX_MANIFEST)
    info = load_model(onnx).info
    assert (info.name, info.version, info.inputs.fields[0].dtype) == ("bc", "onnx-1", "float32")
    with pytest.raises(ConfigError, match=(r"bc_pipe\.augury\.toml describes 'bc_pipe\.onnx', not "
                                           r"'bc_pipe\.joblib'; give bc_pipe\.joblib its own manifest "
                                           r"bc_pipe\.joblib\.augury\.toml")):
        load_model(pickled)
    (pickled.parent / "bc_pipe.joblib.augury.toml").write_text("")  # its own, with nothing to say
    sk = load_model(pickled).info
    # the scikit-learn file's own schema, not the ONNX file's float32
    assert (sk.name, [f.dtype for f in sk.inputs.fields]) == ("bc_pipe", ["float64"] * 4)
    assert sk.version.startswith("sha256:") and sk.version != info.version


def test_a_files_own_manifest(bc_pipe: tuple[Path, Path]) -> None:
    onnx, pickled = bc_pipe
    (pickled.parent / "bc_pipe.joblib.augury.toml").write_text('name = "bc"\nversion = "sk-1"\n')
    (onnx.parent / "bc_pipe.onnx.augury.toml").write_text(ONNX_MANIFEST)
    assert load_model(pickled).info.version == "sk-1"
    assert load_model(onnx).info.version == "onnx-1"
    (pickled.parent / "bc_pipe.augury.toml").write_text('file = "bc_pipe.joblib"\n')
    with pytest.raises(ConfigError, match=r"two manifests describe bc_pipe\.joblib"):
        load_model(pickled)
    (pickled.parent / "bc_pipe.augury.toml").unlink()
    (pickled.parent / "bc_pipe.joblib.augury.toml").write_text('file = "bc_pipe.onnx"\n')
    with pytest.raises(ConfigError, match=r"bc_pipe\.joblib\.augury\.toml describes 'bc_pipe\.onnx'"):
        load_model(pickled)


def test_a_lone_model_keeps_its_stem_manifest_without_file(classifier: Path, manifest: Any) -> None:
    manifest(classifier, 'name = "churn"\nversion = "7"\n')
    (classifier.parent / "clf.augury.toml.bak").write_text("")  # other stems do not count
    (classifier.parent / "clf.joblib.errors.jsonl").write_text("")
    assert load_model(classifier).info.version == "7"
    (classifier.parent / "clf.parquet").write_text("")  # now the manifest could be this file's
    with pytest.raises(ConfigError, match=r'add the line file = "clf\.joblib"'):
        load_model(classifier)


def test_sha256_is_checked(classifier: Path, manifest: Any) -> None:
    import hashlib

    digest = hashlib.sha256(classifier.read_bytes()).hexdigest()
    manifest(classifier, f'file = "clf.joblib"\nsha256 = "{digest.upper()}"\nversion = "1"\n')
    assert load_model(classifier).info.version == "1"
    manifest(classifier, f'file = "clf.joblib"\nsha256 = "{"0" * 64}"\nversion = "1"\n')
    with pytest.raises(ConfigError, match=(f"clf.joblib has sha256 {digest[:16]}[.][.][.], the manifest says "
                                           "0000000000000000[.][.][.]: the file changed")):
        load_model(classifier)


@pytest.mark.parametrize(("text", "message"), [
    ('file = "models/m.joblib"\n', "'file' is the model file's name beside the manifest, not a path"),
    ('file = ""\n', "'file' must be a non-empty string"),
    ('sha256 = "abc"\n', "'sha256' must be 64 hex digits"),
])
def test_invalid_file_and_sha256(tmp_path: Path, manifest: Any, text: str, message: str) -> None:
    manifest(tmp_path / "m.joblib", text)
    with pytest.raises(ConfigError, match=message):
        read_manifest(tmp_path / "m.joblib")


def test_the_demo_writes_manifests_that_name_their_file(tmp_path: Path) -> None:
    from augury.demo import _train

    path = _train(tmp_path, version="v1")
    m = read_manifest(path)
    assert m is not None and m.file == "wine-v1.joblib" and m.sha256 is not None
    assert load_model(path).info.version == "v1"
