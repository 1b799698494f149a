"""The public API is what `augury.__all__` says, no more, no less; importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import augury

EXPECTED = {
    "Advice",
    "AuguryError",
    "BatchError",
    "BatchOptions",
    "BatchResult",
    "ConfigError",
    "Field",
    "InputError",
    "Model",
    "ModelInfo",
    "ModelLoadError",
    "PredictionError",
    "PredictionStore",
    "PublishResult",
    "Report",
    "Schema",
    "SchemaError",
    "StoreError",
    "StoredPrediction",
    "VerificationFailed",
    "VersionInfo",
    "advise",
    "conform",
    "feature_keys",
    "function_model",
    "load_checks",
    "load_model",
    "open_store",
    "publish_predictions",
    "row_key",
    "run_batch",
    "verify",
    "write_report",
}


def test_exported_members() -> None:
    assert set(augury.__all__) == EXPECTED
    public = {name for name in vars(augury) if not name.startswith("_")}
    assert set(augury.__all__) <= public


def test_import_loads_no_framework_or_server() -> None:
    code = (
        "import sys, augury; heavy = {'sklearn', 'onnxruntime', 'xgboost', 'lightgbm', 'starlette', "
        "'uvicorn', 'matplotlib', 'pandas'}; print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
