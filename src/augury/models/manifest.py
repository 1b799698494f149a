"""The optional manifest beside a model file: what the file itself does not say.

For ``path/model.joblib`` the manifest is ``path/model.joblib.augury.toml`` (this file's own) or
``path/model.augury.toml`` (shared by the stem, so it must say which file it describes). Every key is
optional, but a manifest is applied only to the file it describes::

    file = "model.joblib"          # the model file described (its name, beside the manifest)
    sha256 = "9f86d0..."           # optional: the file's SHA-256 (64 hex digits), checked on load
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

Why `file`: a manifest found by the stem alone was applied to every model file of that stem, so
``bc_pipe.augury.toml`` written for ``bc_pipe.onnx`` also named, versioned and typed ``bc_pipe.joblib``
(one version for two models; float32 inputs for scikit-learn). Now a manifest that names another file,
or whose `sha256` differs from the file's, is a `ConfigError`. A stem manifest without `file` (written
before the key existed) is still applied while it cannot be mistaken: no other file beside it has the
model's stem; otherwise it is a `ConfigError` that names the line to add.
"""

from __future__ import annotations

import glob
import hashlib
import re
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

_KEYS = ("file", "sha256", "name", "version", "task", "outputs", "classes", "inputs", "reference")
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
    file: str | None = None
    sha256: str | None = None
    name: str | None = None
    version: str | None = None
    task: str | None = None
    outputs: str | None = None
    classes: tuple[Any, ...] | None = None
    inputs: tuple[InputSpec, ...] | None = None
    #: data the model's inputs are expected to look like (e.g. its validation set), relative to the
    #: manifest: a server's reference for input drift when no store version gives one (`monitor.reference`)
    reference: Path | None = None


def manifest_path(model_path: Path) -> Path:
    """The stem manifest of `model_path`, ``<stem>.augury.toml`` (whether or not it exists)."""
    return model_path.with_name(model_path.stem + MANIFEST_SUFFIX)


def own_manifest_path(model_path: Path) -> Path:
    """The manifest of `model_path` alone, ``<file name>.augury.toml`` (whether or not it exists)."""
    return model_path.with_name(model_path.name + MANIFEST_SUFFIX)


def read_manifest(model_path: Path) -> Manifest | None:
    """The manifest describing `model_path`, or None if there is none; `ConfigError` if it is invalid or
    describes another file (see the module docstring). Its own manifest comes first, then the stem's."""
    own_path = own_manifest_path(model_path)
    own, shared = _load(own_path), _load(manifest_path(model_path))
    if own is not None:
        if shared is not None and shared.file == model_path.name:
            raise ConfigError(f"two manifests describe {model_path.name}: {own.path} and {shared.path}; "
                              "keep one")
        manifest = own
    elif shared is not None:
        if shared.file is None:
            _check_unambiguous(shared, model_path)
        manifest = shared
    else:
        return None
    if manifest.file is not None and manifest.file != model_path.name:
        raise ConfigError(
            f"manifest {manifest.path} describes {manifest.file!r}, not {model_path.name!r}; give "
            f"{model_path.name} its own manifest {own_path.name} (an empty file if it needs no settings)"
        )
    if manifest.sha256 is not None:
        actual = _sha256(model_path, manifest.path)
        if actual != manifest.sha256:
            raise ConfigError(
                f"manifest {manifest.path}: {model_path.name} has sha256 {actual[:16]}..., the manifest "
                f"says {manifest.sha256[:16]}...: the file changed since the manifest was written; "
                "update the manifest (its sha256, and its version if it has one)"
            )
    return manifest


def _load(path: Path) -> Manifest | None:
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


def _check_unambiguous(manifest: Manifest, model_path: Path) -> None:
    """A stem manifest without `file` applies only while no other file beside it has the model's stem."""
    stem = model_path.stem
    others = sorted(
        p.name for p in model_path.parent.glob(glob.escape(stem) + ".*")
        if p.stem == stem and p.name != model_path.name
    )
    if others:
        raise ConfigError(
            f"manifest {manifest.path} does not say which model file it describes, and "
            f"{', '.join([model_path.name, *others])} share its stem; add the line "
            f'file = "{model_path.name}" to it if it describes {model_path.name} (or give each file its '
            f"own manifest, <file name>{MANIFEST_SUFFIX})"
        )


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes, in hex, read a megabyte at a time (OSError if it cannot be read)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha256(model_path: Path, manifest: Path) -> str:
    try:
        return file_sha256(model_path)
    except OSError as exc:
        raise ConfigError(f"manifest {manifest}: cannot read {model_path} to check its sha256: {exc}"
                          ) from exc


def parse_manifest(data: Mapping[str, Any], path: Path) -> Manifest:
    """Validate the TOML table `data` read from `path` (named in every error)."""
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ConfigError(f"manifest {path}: unknown key {unknown[0]!r} (allowed: {', '.join(_KEYS)})")
    task = _choice(data, "task", TASKS, path)
    outputs = _choice(data, "outputs", OUTPUT_MODES, path)
    return Manifest(
        path=path,
        file=_file(data, path),
        sha256=_digest(data, path),
        name=_text(data, "name", path),
        version=_version(data, path),
        task=task,
        outputs=outputs,
        classes=_classes(data, path),
        inputs=_inputs(data, path),
        reference=_reference(data, path),
    )


def _reference(data: Mapping[str, Any], path: Path) -> Path | None:
    value = _text(data, "reference", path)
    return None if value is None else path.parent / value


def _file(data: Mapping[str, Any], path: Path) -> str | None:
    value = _text(data, "file", path)
    if value is not None and ("/" in value or "\\" in value or value in (".", "..")):
        raise ConfigError(f"manifest {path}: 'file' is the model file's name beside the manifest, "
                          f"not a path: {value!r}")
    return value


def _digest(data: Mapping[str, Any], path: Path) -> str | None:
    value = _text(data, "sha256", path)
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ConfigError(f"manifest {path}: 'sha256' must be 64 hex digits (the file's SHA-256), "
                          f"not {value!r}")
    return value.lower() if value is not None else None


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
