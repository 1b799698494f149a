"""Model adapters: one `Model` contract, one module per framework, a registry of file formats.

``load_model(ref)`` reads scikit-learn pickles (``.joblib``/``.pkl``/``.pickle``: only load files you trust,
pickles run code when loaded), ``.skops`` files, ``.onnx`` graphs, XGBoost (``.ubj``/``.json``) and
LightGBM (``.txt``/``.lgb``/``.lgbm``) native files, and Python functions declared with `function_model`
and named ``module:function``. An optional ``<stem>.augury.toml`` manifest beside the file sets the name,
version, task, outputs, classes and input schema (see `augury.models.manifest`).

Importing this package imports no ML framework: each loader imports its own when called.
"""

from __future__ import annotations

from augury.models.base import TASKS, Model, ModelInfo, predict_checked
from augury.models.function import FunctionModel, function_model
from augury.models.loader import FORMATS, Format, load_model, register_format, supported_formats
from augury.models.manifest import Manifest, manifest_path, read_manifest

__all__ = [
    "FORMATS",
    "TASKS",
    "Format",
    "FunctionModel",
    "Manifest",
    "Model",
    "ModelInfo",
    "function_model",
    "load_model",
    "manifest_path",
    "predict_checked",
    "read_manifest",
    "register_format",
    "supported_formats",
]
