# The peers' BentoML service, as first measured, unchanged below this line (run by ../http_bench.py).
"""BentoML (1.4 SDK) service for Model S, one worker process.

Two endpoints on the same service:
  POST /predict          batchable=True (adaptive batching; BENTO_MAX_BATCH, BENTO_MAX_LATENCY_MS)
  POST /predict_single   plain API, one predict_proba call per request
Body: {"features": [[20 floats]]}; response: JSON list [[p0, p1]].

Run (cwd = bench/servers):
  BENTOML_HOME=/tmp/bench/bentoml_home BENTOML_DO_NOT_TRACK=true \
    bentoml serve bento_service:ModelS --host 127.0.0.1 --port 8000
"""
import os

import bentoml
import numpy as np

MODEL_PATH = os.environ.get("MODEL_PATH", "/tmp/bench/models/model_s.joblib")
MAX_BATCH = int(os.environ.get("BENTO_MAX_BATCH", "64"))
MAX_LATENCY_MS = int(os.environ.get("BENTO_MAX_LATENCY_MS", "60000"))  # BentoML default


# Access log off: the other systems also run without per-request access logs.
@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class ModelS:
    def __init__(self) -> None:
        import joblib

        self.model = joblib.load(MODEL_PATH)

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(features)

    @bentoml.api
    def predict_single(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(features)
