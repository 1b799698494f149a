# The peers' Starlette servers, as first measured, unchanged below this line (run by ../http_bench.py).
"""Hand-written Starlette app used for three reference systems (one uvicorn worker each).

MODE (env var) selects what POST /predict does after parsing the JSON body:
  bare   : return a constant JSON prediction (HTTP-stack ceiling; works for any JSON body)
  naive  : model.predict_proba(one row) with sklearn (Model S, joblib)          [async def]
  naive_threadpool : same as naive but predict_proba runs in Starlette's threadpool (FastAPI `def` style)
  onnx   : onnxruntime InferenceSession.run on one float32 row (intra_op_num_threads=1)

Body for naive/onnx: {"features": [[20 floats]]}.  Response: {"predictions": [[p0, p1]]}.
Run:  MODE=naive python -m uvicorn starlette_app:app --app-dir bench/servers \
          --host 127.0.0.1 --port 8000 --workers 1 --loop uvloop --http httptools --no-access-log
"""
import os

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODE = os.environ.get("MODE", "bare")
MODEL_DIR = os.environ.get("MODEL_DIR", "/tmp/bench/models")

CONST = {"predictions": [[0.9799520411553194, 0.02004795884468061]]}

if MODE in ("naive", "naive_threadpool"):
    import joblib

    MODEL = joblib.load(os.path.join(MODEL_DIR, "model_s.joblib"))
elif MODE == "onnx":
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("ORT_THREADS", "1"))
    so.inter_op_num_threads = 1
    SESS = ort.InferenceSession(
        os.path.join(MODEL_DIR, "model_s.onnx"), sess_options=so, providers=["CPUExecutionProvider"]
    )


async def bare(request: Request):
    await request.json()
    return JSONResponse(CONST)


async def naive(request: Request):
    body = await request.json()
    x = np.asarray(body["features"], dtype=np.float64)
    return JSONResponse({"predictions": MODEL.predict_proba(x).tolist()})


async def naive_threadpool(request: Request):
    # What FastAPI does for a plain `def predict(...)` endpoint: parse on the loop, run in threadpool.
    body = await request.json()
    x = np.asarray(body["features"], dtype=np.float64)
    proba = await run_in_threadpool(MODEL.predict_proba, x)
    return JSONResponse({"predictions": proba.tolist()})


async def onnx(request: Request):
    body = await request.json()
    x = np.asarray(body["features"], dtype=np.float32)
    proba = SESS.run(["probabilities"], {"input": x})[0]
    return JSONResponse({"predictions": proba.tolist()})


async def health(request: Request):
    return JSONResponse({"ok": True, "mode": MODE})


HANDLERS = {"bare": bare, "naive": naive, "naive_threadpool": naive_threadpool, "onnx": onnx}
app = Starlette(
    routes=[
        Route("/predict", HANDLERS[MODE], methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
)
