"""The HTTP routes: each reads the request, calls a codec and the service, and writes the response.

Errors are raised as augury errors and turned into ``{"error": ...}`` responses by the app's exception
handler (`serve.errors` picks the status), so no route builds an error response itself.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from augury.serve import codec_v1, codec_v2
from augury.serve.service import Service, provenance_headers
from augury.serve.wire import JSONResponse, deadline_of, parse_json, read_body


class Routes:
    """The endpoints of one app, bound to its `Service`."""

    def __init__(self, service: Service) -> None:
        self.s = service

    def table(self) -> list[BaseRoute]:
        v2 = "/v2/models/{name}"
        v2v = "/v2/models/{name}/versions/{version}"
        return [
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route(v2, self.model_metadata, methods=["GET"]),
            Route(v2v, self.model_metadata, methods=["GET"]),
            Route(f"{v2}/ready", self.model_ready, methods=["GET"]),
            Route(f"{v2v}/ready", self.model_ready, methods=["GET"]),
            Route(f"{v2}/infer", self.infer, methods=["POST"]),
            Route(f"{v2v}/infer", self.infer, methods=["POST"]),
            Route("/v1/models/{name}:predict", self.predict, methods=["POST"]),
            Route("/v1/models/{name}", self.model_status, methods=["GET"]),
            Route("/v1/models/{name}/predictions/{key:path}", self.lookup, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
        ]

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        reason = self.s.not_ready()
        if reason is not None:
            return JSONResponse({"ready": False, "error": reason}, status_code=503)
        return JSONResponse({"ready": True})

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse(self.s.server_metadata())

    async def model_metadata(self, request: Request) -> Response:
        self.s.check(request.path_params)
        return JSONResponse(self.s.model_metadata())

    async def model_ready(self, request: Request) -> Response:
        self.s.check(request.path_params)
        status = self.s.model_status()
        return JSONResponse(status, status_code=200 if status["ready"] else 503)

    async def model_status(self, request: Request) -> Response:
        self.s.check(request.path_params)
        return JSONResponse(self.s.model_status())

    async def infer(self, request: Request) -> Response:
        self.s.check(request.path_params)
        settings = self.s.settings
        body = await read_body(request, settings.max_body_bytes)
        header, binary = codec_v2.split_body(body, request.headers.get(codec_v2.HEADER_LENGTH))
        req = codec_v2.parse_infer(parse_json(header), binary, self.s.router.schema,
                                   ignore_unknown=settings.ignore_unknown_fields,
                                   max_instances=settings.max_instances)
        answers = await self.s.predict(req.examples, deadline_of(request.headers, req.parameters))
        headers = provenance_headers(answers)
        content, header_length = codec_v2.encode_infer(
            req, answers, self.s.name, headers["x-augury-model-version"], self.s.outputs(answers))
        if header_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers[codec_v2.HEADER_LENGTH] = str(header_length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def predict(self, request: Request) -> Response:
        self.s.check(request.path_params)
        settings = self.s.settings
        body = await read_body(request, settings.max_body_bytes)
        examples, parameters = codec_v1.parse_predict(
            parse_json(body), self.s.router.schema, ignore_unknown=settings.ignore_unknown_fields,
            max_instances=settings.max_instances)
        answers = await self.s.predict(examples, deadline_of(request.headers, parameters))
        return JSONResponse(codec_v1.encode_predict(answers), headers=provenance_headers(answers))

    async def lookup(self, request: Request) -> Response:
        self.s.check(request.path_params)
        key = request.path_params["key"]
        answer = await self.s.lookup(key)
        return JSONResponse(codec_v1.encode_lookup(key, answer), headers=provenance_headers([answer]))

    async def metrics(self, request: Request) -> Response:
        content, media_type = self.s.metrics.render()
        return Response(content, media_type=media_type)

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self.s.openapi)
