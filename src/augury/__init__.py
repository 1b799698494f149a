"""augury: static, dynamic and hybrid inference for trained models.

The public API; everything else is reachable through its subpackages. Importing augury imports no model
framework and no web server.
"""

from augury.advise import Advice, advise, write_report
from augury.batch import BatchOptions, BatchResult, run_batch
from augury.errors import (
    AuguryError,
    BatchError,
    ConfigError,
    InputError,
    ModelLoadError,
    PredictionError,
    SchemaError,
    StoreError,
    VerificationFailed,
)
from augury.keys import feature_keys, row_key
from augury.models import Model, ModelInfo, function_model, load_model
from augury.publish import PublishResult, publish_predictions
from augury.schema import Field, Schema, conform
from augury.store import PredictionStore, StoredPrediction, VersionInfo, open_store
from augury.verify import Report, load_checks, verify

__all__ = [
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
]
