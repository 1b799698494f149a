"""`load_model`: format detection, names and versions, and one clear error per failure."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.linear_model import LinearRegression

from augury.errors import ConfigError, MissingExtraError, ModelLoadError
from augury.models import FORMATS, Model, ModelInfo, load_model, loader, register_format, supported_formats
from augury.models._common import LoadContext
from augury.models.function import function_model


@pytest.fixture
def linear(data: Any, tmp_path: Path) -> Path:
    path = tmp_path / "linear.joblib"
    joblib.dump(LinearRegression().fit(data.x, data.y_reg), path)
    return path


def test_every_format_is_registered() -> None:
    assert set(FORMATS) == {"sklearn", "skops", "onnx", "xgboost", "lightgbm"}
    assert ".ubj" in supported_formats() and "module:function" in supported_formats()


def test_result_keeps_the_model_protocol(linear: Path) -> None:
    model = load_model(linear)
    assert isinstance(model, Model) and isinstance(model.info, ModelInfo)


def test_content_hash_version_is_stable_and_follows_the_file(linear: Path, data: Any) -> None:
    first = load_model(linear).info.version
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert load_model(str(linear)).info.version == first
    joblib.dump(LinearRegression().fit(data.x[:100], data.y_reg[:100]), linear)
    assert load_model(linear).info.version != first


def test_name_precedence(linear: Path, manifest: Any) -> None:
    assert load_model(linear).info.name == "linear"
    manifest(linear, 'name = "from-manifest"\nversion = "7"\n')
    assert (load_model(linear).info.name, load_model(linear).info.version) == ("from-manifest", "7")
    assert load_model(linear, name="explicit").info.name == "explicit"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model file .*nothing\.joblib does not exist"):
        load_model(tmp_path / "nothing.joblib")


def test_directory_lists_formats(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"is a directory, not a model file; supported formats: sklearn"):
        load_model(tmp_path)


def test_unknown_suffix_lists_formats(tmp_path: Path) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF")
    with pytest.raises(ModelLoadError, match=r"model\.h5: unknown model format '\.h5'; supported formats: "):
        load_model(tmp_path / "model.h5")


@pytest.mark.parametrize("content", [b"\x00\x01\x02random bytes\xff" * 20, b"just some text\n"])
def test_file_that_is_not_a_pickle(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "fake.joblib").write_bytes(content)
    with pytest.raises(ModelLoadError, match=r"fake\.joblib is not a readable joblib/pickle model file"):
        load_model(tmp_path / "fake.joblib")


def test_pickle_without_predict(tmp_path: Path) -> None:
    with (tmp_path / "weights.pkl").open("wb") as fh:
        pickle.dump({"w": [1, 2]}, fh)
    with pytest.raises(ModelLoadError, match=r"weights\.pkl holds a builtins\.dict, which has no predict"):
        load_model(tmp_path / "weights.pkl")


def test_bad_threads(linear: Path) -> None:
    with pytest.raises(ConfigError, match="threads must be at least 1"):
        load_model(linear, threads=0)


@pytest.mark.parametrize(("module", "extra", "suffix"), [
    ("onnxruntime", "onnx", ".onnx"), ("xgboost", "xgboost", ".ubj"), ("lightgbm", "lightgbm", ".txt"),
    ("joblib", "sklearn", ".joblib"), ("skops.io", "sklearn", ".skops"),
])
def test_missing_framework_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str,
                                           extra: str, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_text("tree\n")  # the LightGBM loader checks the content before importing
    monkeypatch.setitem(sys.modules, module, None)  # what `import module` meets when it is not installed
    with pytest.raises(MissingExtraError, match=rf"model\{suffix} needs the .*'augury\[{extra}\]'"):
        load_model(path)


def test_unpickling_a_model_of_a_missing_framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(LinearRegression()))
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(MissingExtraError, match=r"augury\[sklearn\]"):
        load_model(tmp_path / "m.pkl")


def test_importing_augury_models_imports_no_framework() -> None:
    code = ("import sys, augury.models; "
            "print(sorted(m for m in ('sklearn', 'onnxruntime', 'xgboost', 'lightgbm', 'joblib', 'skops', "
            "'pandas', 'onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_register_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "FORMATS", dict(loader.FORMATS))
    monkeypatch.setattr(loader, "_BY_SUFFIX", dict(loader._BY_SUFFIX))

    @function_model(inputs={"x": "float"}, outputs={"value": "float"})
    def constant(batch: dict[str, Any]) -> Any:
        return batch["x"] * 0.0

    def load_constant(ctx: LoadContext) -> Model:
        return constant.to_model(name=ctx.name, source=ctx.source)

    register_format("constant", (".const",), load_constant)
    (tmp_path / "zero.const").write_text("")
    model = load_model(tmp_path / "zero.const")
    assert (model.info.name, model.info.source) == ("zero", str(tmp_path / "zero.const"))
    with pytest.raises(ConfigError, match="already belong to another format"):
        register_format("other", (".CONST",), load_constant)
