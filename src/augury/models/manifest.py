"""The optional manifest beside a model file: what the file itself does not say.

For ``path/model.joblib`` the manifest is ``path/model.augury.toml``. Every key is optional::

    name = "churn"                 # ModelInfo.name (an explicit name= argument wins)
    version = "2024-06-01"         # ModelInfo.version (else a hash of the model file)
    task = "classification"        # "classification" | "regression" | "other"
    outputs = "proba"              # classifiers: "label" (label only) or "proba" (label and probabilities)
    classes = ["no", "yes"]        # class labels, for formats that store only class indices

    [[inputs]]                     # the input schema, in order; needed when the model cannot say it
    name = "text"                  #   (string features of a pandas-fitted pipeline, ONNX graphs with
    dtype = "string"               #   unnamed inputs, callables) or to rename positional features
    allow_missing = false          # optional; default: whether the model accepts NaN natively

An unknown key, a bad value or a bad TOML file is a `ConfigError` naming the key and the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augury.errors import ConfigError
from augury.models.base import TASKS
from augury.schema import dtype_name

#: the manifest of ``dir/model.ext`` is ``dir/model`` + this suffix.
MANIFEST_SUFFIX = ".augury.toml"
#: values of the manifest's ``outputs`` key.
OUTPUT_MODES = ("label", "proba")

_KEYS = ("name", "version", "task", "outputs", "classes", "inputs")
_INPUT_KEYS = ("name", "dtype", "allow_missing")


@dataclass(frozen=True)
class InputSpec:
    """One declared input feature. `allow_missing` is None when the manifest leaves it to the model."""

    name: str
    dtype: str
    allow_missing: bool | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest; None means the key was not given."""

    path: Path
    name: str | None = None
    version: str | None = None
    task: str | None = None
    outputs: str | None = None
    classes: tuple[Any, ...] | None = None
    inputs: tuple[InputSpec, ...] | None = None


def manifest_path(model_path: Path) -> Path:
    """Where the manifest of `model_path` lives (whether or not it exists)."""
    return model_path.with_name(model_path.stem + MANIFEST_SUFFIX)


def read_manifest(model_path: Path) -> Manifest | None:
    """The manifest beside `model_path`, or None if there is none; `ConfigError` if it is invalid."""
    path = manifest_path(model_path)
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"manifest {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}") from exc
    return parse_manifest(data, path)


def parse_manifest(data: Mapping[str, Any], path: Path) -> Manifest:
    """Validate the TOML table `data` read from `path` (named in every error)."""
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(f"manifest {path}: unknown key {unknown[0]!r} (allowed: {', '.join(_KEYS)})")
    task = _choice(data, "task", TASKS, path)
    outputs = _choice(data, "outputs", OUTPUT_MODES, path)
    return Manifest(
        path=path,
        name=_text(data, "name", path),
        version=_version(data, path),
        task=task,
        outputs=outputs,
        classes=_classes(data, path),
        inputs=_inputs(data, path),
    )


def _text(data: Mapping[str, Any], key: str, path: Path) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"manifest {path}: {key!r} must be a non-empty string, not {value!r}")
    return value


def _version(data: Mapping[str, Any], path: Path) -> str | None:
    value = data.get("version")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(data, "version", path)


def _choice(data: Mapping[str, Any], key: str, allowed: tuple[str, ...], path: Path) -> str | None:
    value = data.get(key)
    if value is not None and value not in allowed:
        raise ConfigError(f"manifest {path}: {key!r} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _classes(data: Mapping[str, Any], path: Path) -> tuple[Any, ...] | None:
    value = data.get("classes")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(c, str | int | float | bool) for c in value)
    ):
        raise ConfigError(f"manifest {path}: 'classes' must be a non-empty list of strings or numbers")
    if len({(type(c), c) for c in value}) != len(value):
        raise ConfigError(f"manifest {path}: 'classes' has duplicates: {value!r}")
    return tuple(value)


def _inputs(data: Mapping[str, Any], path: Path) -> tuple[InputSpec, ...] | None:
    value = data.get("inputs")
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"manifest {path}: 'inputs' must be one or more [[inputs]] tables")
    specs: list[InputSpec] = []
    for i, table in enumerate(value):
        unknown = sorted(set(table) - set(_INPUT_KEYS))
        if unknown:
            raise ConfigError(
                f"manifest {path}: unknown key {unknown[0]!r} in inputs[{i}] "
                f"(allowed: {', '.join(_INPUT_KEYS)})"
            )
        name, dtype, allow = table.get("name"), table.get("dtype"), table.get("allow_missing")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"manifest {path}: inputs[{i}] needs a non-empty 'name'")
        if not isinstance(dtype, str):
            raise ConfigError(f"manifest {path}: input {name!r} needs a 'dtype'")
        if allow is not None and not isinstance(allow, bool):
            raise ConfigError(f"manifest {path}: input {name!r}: 'allow_missing' must be true or false")
        try:
            canonical = dtype_name(dtype)
        except ConfigError as exc:
            raise ConfigError(f"manifest {path}: input {name!r}: {exc}") from exc
        specs.append(InputSpec(name, canonical, allow))
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"manifest {path}: duplicate input name(s): {', '.join(duplicates)}")
    return tuple(specs)
