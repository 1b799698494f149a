# The peers' Ray Serve app, as first measured, unchanged below this line (run by ../http_bench.py).
"""Ray Serve app for Model S: one replica, HTTP proxy on 127.0.0.1:$PORT, route /predict.

RAY_BATCH=1 uses @serve.batch(max_batch_size=$RAY_MAX_BATCH, batch_wait_timeout_s=$RAY_BATCH_WAIT_S);
RAY_BATCH=0 calls predict_proba once per request.
Body: {"features": [[20 floats]]}; response: {"predictions": [[p0, p1]]}.
The script starts a local Ray instance (num_cpus=2, no dashboard), deploys, prints READY and
blocks; SIGTERM/SIGINT shut Serve and Ray down.
"""
import os
import signal
import sys
import time

import numpy as np
import ray
from ray import serve
from starlette.requests import Request

MODEL_PATH = os.environ.get("MODEL_PATH", "/tmp/bench/models/model_s.joblib")
BATCH = os.environ.get("RAY_BATCH", "1") == "1"
MAX_BATCH = int(os.environ.get("RAY_MAX_BATCH", "32"))
WAIT_S = float(os.environ.get("RAY_BATCH_WAIT_S", "0.002"))
PORT = int(os.environ.get("PORT", "8000"))


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=int(os.environ.get("RAY_MAX_ONGOING", "64")),
    ray_actor_options={"num_cpus": 0},
)
class ModelS:
    def __init__(self):
        import joblib

        self.model = joblib.load(MODEL_PATH)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=WAIT_S)
    async def _batched(self, rows):
        X = np.vstack(rows)
        proba = self.model.predict_proba(X)
        return [p.tolist() for p in proba]

    async def __call__(self, request: Request):
        body = await request.json()
        x = np.asarray(body["features"], dtype=np.float64)
        if BATCH:
            return {"predictions": [await self._batched(x[0])]}
        return {"predictions": self.model.predict_proba(x).tolist()}


def _stop(*_):
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",  # keep Ray's internal traffic on loopback
        object_store_memory=int(os.environ.get("RAY_OBJECT_STORE_BYTES", str(512 * 1024 * 1024))),
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(ModelS.bind(), route_prefix="/predict", name="model_s")
    print("READY", flush=True)
    while True:
        time.sleep(3600)
