"""The bare endpoint `http_bench.py` compares augury's server with: the same HTTP stack, no model, no store.

Starlette on uvicorn (uvloop + httptools), one process, no access log, no ``server`` header (as
``augury serve`` runs it). It answers on augury's own paths, so the same wrk scripts and URLs load both:

- ``POST /v1/models/{name}:predict``: reads the body, parses it as JSON with orjson (what augury uses),
  returns a constant shaped like augury's v1 answer for one instance;
- ``POST /v2/models/{name}/infer``: the same, with a constant shaped like a v2 answer;
- ``GET /v1/models/{name}/predictions/{key}``: a constant shaped like a stored prediction (no body);
- ``GET /health``: ``{"ok": true}``.

The constants are serialised with orjson on every request, as augury serialises its answers.

``--coalesce`` serves the same app with the HTTP protocol ``augury serve`` uses,
`augury.serve.protocol.AuguryHttpProtocol` (httptools parsing, each response written in one socket write),
instead of uvicorn's plain ``httptools``: the bare endpoint of the same protocol. (Importing it loads the
``augury`` package, numpy and pyarrow with it: more memory and start-up time, the same speed.)

    python benchmarks/bare_server.py --port 8000
    python benchmarks/bare_server.py --port 8000 --coalesce
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PROVENANCE = {"source": "dynamic", "model_version": "1", "computed_at": "2024-01-01T00:00:00.000000Z"}
PREDICT = {
    "predictions": [{"label": 1, "proba_0": 0.02004795884468061, "proba_1": 0.9799520411553194}],
    "provenance": [PROVENANCE],
}
INFER = {
    "model_name": "hgb20",
    "model_version": "1",
    "outputs": [
        {"name": "label", "shape": [1], "datatype": "INT64", "data": [1]},
        {"name": "proba_0", "shape": [1], "datatype": "FP64", "data": [0.02004795884468061]},
        {"name": "proba_1", "shape": [1], "datatype": "FP64", "data": [0.9799520411553194]},
    ],
    "parameters": {"provenance": [PROVENANCE]},
}
LOOKUP = {
    "key": "c0000000",
    "prediction": {"label": 1, "proba_0": 0.02004795884468061, "proba_1": 0.9799520411553194},
    "provenance": {"source": "static", "model_version": "1", "store_version": "1",
                   "computed_at": "2024-01-01T00:00:00.000000Z", "age_s": 12.345},
}


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def predict(request: Request) -> Response:
    orjson.loads(await request.body())
    return JSONResponse(PREDICT)


async def infer(request: Request) -> Response:
    orjson.loads(await request.body())
    return JSONResponse(INFER)


async def lookup(request: Request) -> Response:
    return JSONResponse(LOOKUP)


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v1/models/{name}/predictions/{key:path}", lookup, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
)


def augury_protocol() -> Any:
    """`augury.serve.protocol.AuguryHttpProtocol`, the HTTP protocol ``augury serve`` uses."""
    from augury.serve.protocol import AuguryHttpProtocol

    return AuguryHttpProtocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--coalesce", action="store_true",
                    help="serve with augury's AuguryHttpProtocol (one socket write per response)")
    ap.add_argument("--workers", type=int, default=1, help="server processes [1]")
    args = ap.parse_args()
    http: Any = augury_protocol() if args.coalesce else "httptools"
    # several workers import the app by name (the protocol class is pickled by its importable name)
    target: Any = app if args.workers == 1 else "bare_server:app"
    uvicorn.run(target, app_dir=str(Path(__file__).parent), host=args.host, port=args.port, loop="uvloop",
                http=http, workers=args.workers, access_log=False, server_header=False, lifespan="on",
                log_level="warning")


if __name__ == "__main__":
    main()
