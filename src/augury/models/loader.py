"""`load_model`: from a path or a ``module:function`` reference to a `Model`, by a registry of formats.

The format is chosen by the file's suffix (JSON and text files are then checked by content); each
format's loader imports its framework only when called, so importing augury never imports scikit-learn,
onnxruntime, XGBoost or LightGBM. Every failure is one `ModelLoadError` naming the file (or a
`ConfigError` for a bad manifest); no framework exception escapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from augury.errors import AuguryError, ConfigError, ModelLoadError
from augury.models._common import LoadContext, file_version
from augury.models.base import Model
from augury.models.evaluator import DEFAULT, check_choice
from augury.models.function import load_callable
from augury.models.lightgbm import load_lightgbm
from augury.models.manifest import read_manifest
from augury.models.onnx import load_onnx
from augury.models.sklearn import load_pickle, load_skops
from augury.models.xgboost import load_xgboost

Loader = Callable[[LoadContext], Model]


@dataclass(frozen=True)
class Format:
    """A model file format: its name (`ModelInfo.format`), file suffixes, and loader."""

    name: str
    suffixes: tuple[str, ...]
    load: Loader


#: the known file formats by name; `register_format` adds one.
FORMATS: dict[str, Format] = {}
_BY_SUFFIX: dict[str, Format] = {}


def register_format(name: str, suffixes: tuple[str, ...], load: Loader) -> None:
    """Make files ending in `suffixes` (e.g. ``(".bin",)``) load with `load`; a suffix maps to one format."""
    taken = sorted(s for s in suffixes if s.lower() in _BY_SUFFIX and _BY_SUFFIX[s.lower()].name != name)
    if taken:
        raise ConfigError(f"suffix(es) {', '.join(taken)} already belong to another format")
    fmt = Format(name, tuple(s.lower() for s in suffixes), load)
    FORMATS[name] = fmt
    for suffix in fmt.suffixes:
        _BY_SUFFIX[suffix] = fmt


register_format("sklearn", (".joblib", ".pkl", ".pickle"), load_pickle)
register_format("skops", (".skops",), load_skops)
register_format("onnx", (".onnx",), load_onnx)
register_format("xgboost", (".ubj", ".json"), load_xgboost)
register_format("lightgbm", (".txt", ".lgb", ".lgbm"), load_lightgbm)


def supported_formats() -> str:
    """A one-line list of the formats, for error messages."""
    files = [f"{f.name} ({', '.join(f.suffixes)})" for f in FORMATS.values()]
    return "supported formats: " + ", ".join([*files, "function (module:function)"])


def load_model(
    ref: str | os.PathLike[str],
    *,
    name: str | None = None,
    threads: int | None = None,
    trust_skops: bool = False,
    evaluator: str = DEFAULT,
) -> Model:
    """Load the model at `ref`: a file path, or ``module:function`` naming a `function_model`.

    `name` overrides the model's name (else the manifest's, else the file's stem or the function's name).
    `threads` caps the framework's threads per predict call where it has such a setting (ONNX, XGBoost,
    LightGBM; default 1). `trust_skops` loads a skops file even if it holds types skops does not trust.
    `evaluator`: "auto" (the default, shared by batch runs and the server), "compiled" or "library":
    which code scores a model that has two exact evaluators (`models.evaluator`; today scikit-learn's
    HistGradientBoosting models, compiled with numba by `models.hgb`: the same answers, ~6x faster on
    small batches). The decision is `model.info.evaluator`.
    The manifest beside the file that describes it (``<file name>.augury.toml``, else ``<stem>.augury.toml``
    naming it as ``file``; `manifest.read_manifest`) completes what the file says; one that describes
    another file is a `ConfigError`.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be at least 1, not {threads}")
    choice = check_choice(evaluator)
    if isinstance(ref, str) and ":" in ref and not os.path.exists(ref):
        return load_callable(ref, name=name)
    path = Path(ref)
    if not path.exists():
        raise ModelLoadError(
            f"model file {path} does not exist; check the path (or give a function as 'module:function')"
        )
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a model file; {supported_formats()}")
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise ModelLoadError(
            f"{path}: unknown model format {path.suffix or '(no suffix)'!r}; {supported_formats()}"
        )
    manifest = read_manifest(path)
    resolved_name = name or (manifest.name if manifest else None) or path.stem
    version = (manifest.version if manifest else None) or file_version(path)
    ctx = LoadContext(path, resolved_name, version, manifest, threads, trust_skops, choice)
    try:
        return fmt.load(ctx)
    except AuguryError:
        raise
    except Exception as exc:  # the boundary: a framework error while describing the model
        raise ModelLoadError(
            f"{path}: cannot load as a {fmt.name} model ({type(exc).__name__}: {exc})"
        ) from exc
