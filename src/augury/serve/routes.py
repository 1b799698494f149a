"""The HTTP routes: each reads the request, calls a codec and the service, and writes the response.

Errors are raised as augury errors and turned into ``{"error": ...}`` responses by the app's exception
handler (`serve.errors` picks the status), so no route builds an error response itself. The hot routes
(v1 predict and lookup, v2 infer) are plain ASGI endpoints, first in the table: see `serve.hot`.

A GET on ``/v1/models/{name}:predict`` is a 405 (``Allow: POST``), as any other method but POST is: the
model status route ``/v1/models/{name}`` would otherwise match it, with the name ``{name}:predict``, and
answer 404 "unknown model".
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from augury.serve.dashboard import Dashboard
from augury.serve.hot import V1_PREDICT, hot_routes
from augury.serve.service import STORE_DOWN, Service
from augury.serve.wire import JSONResponse


class Routes:
    """The endpoints of one app, bound to its `Service`."""

    def __init__(self, service: Service) -> None:
        self.s = service

    def table(self) -> list[BaseRoute]:
        v2 = "/v2/models/{name}"
        v2v = "/v2/models/{name}/versions/{version}"
        return [
            *hot_routes(self.s),  # v1 predict and lookup, v2 infer: see `serve.hot`
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route(v2, self.model_metadata, methods=["GET"]),
            Route(v2v, self.model_metadata, methods=["GET"]),
            Route(f"{v2}/ready", self.model_ready, methods=["GET"]),
            Route(f"{v2v}/ready", self.model_ready, methods=["GET"]),
            Route(V1_PREDICT, self.predict_by_get, methods=["GET"]),  # before the next (see above)
            Route("/v1/models/{name}", self.model_status, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            *Dashboard(self.s.metrics).routes(),  # the live page and its data
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        await self.s.refresh_store()
        reason = self.s.not_ready()
        if reason is not None:
            return JSONResponse({"ready": False, "error": reason}, status_code=503)
        if self.s.model is not None and self.s.store_problem() == STORE_DOWN:  # hybrid: computes instead
            degraded = f"{STORE_DOWN}; examples are computed, lookups by key alone fail"
            return JSONResponse({"ready": True, "degraded": degraded})
        return JSONResponse({"ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(self.s.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        self.s.check(request.path_params)
        # on a thread, as the two below: they read the store's active version (a networked store's is a
        # round trip)
        return JSONResponse(await asyncio.to_thread(self.s.model_metadata))

    async def model_ready(self, request: Request) -> Response:
        self.s.check(request.path_params)
        await self.s.refresh_store()
        status = await asyncio.to_thread(self.s.model_status)
        return JSONResponse(status, status_code=200 if status["ready"] else 503)

    async def model_status(self, request: Request) -> Response:
        self.s.check(request.path_params)
        await self.s.refresh_store()
        return JSONResponse(await asyncio.to_thread(self.s.model_status))

    async def predict_by_get(self, request: Request) -> Response:
        raise HTTPException(405, headers={"Allow": "POST"})

    async def metrics(self, request: Request) -> Response:
        # on a thread: rendering reads the store's active version (a round trip to a networked store)
        content, media_type = await asyncio.to_thread(self.s.metrics.render)
        return Response(content, media_type=media_type)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self.s.openapi)
