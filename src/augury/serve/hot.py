"""The hot routes (v1 predict, v1 lookup, v2 infer) as plain ASGI endpoints, and a dispatcher to them.

Each endpoint reads what it needs from the ASGI scope (path parameters, a few headers, the body) and
sends its answer as bytes: no Request or Response objects. They are the endpoints of their routes in
the app's Starlette table, and `HotDispatch`, which the app consults before anything of Starlette's
runs, also answers requests for them directly: it recognises the three path shapes by prefix and suffix
instead of trying the table's route patterns one by one, and does itself what the `Observability`
middleware does for the other routes (request id, metrics, log line, last-resort 500), through the same
`Bookkeeping`. Measured under wrk, Starlette's middleware stack, router and exception handling cost
~14 µs a request (a raw ASGI endpoint under uvicorn answers 55,800 GETs/s, the same constant through
Starlette 30,800): more than a whole store lookup.

Anything `HotDispatch` does not recognise (another route, another method, a ``root_path``) goes through
Starlette, and both ways behave the same: the route template the metrics count, the path parameters,
errors turned into ``{"error": ...}`` with the status `serve.errors` gives them, ``X-Request-Id``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, NamedTuple

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from augury.errors import AuguryError
from augury.serve import codec_v1, codec_v2
from augury.serve.lookup_memo import answer_body
from augury.serve.middleware import Bookkeeping, internal_error
from augury.serve.service import Service, model_versions, provenance_headers
from augury.serve.wire import (
    JSON_TYPE,
    deadline_of,
    dump_json,
    error_reply,
    parse_json,
    receive_body,
    request_headers,
    send_whole,
)

V1_PREDICT = "/v1/models/{name}:predict"
V1_LOOKUP = "/v1/models/{name}/predictions/{key:path}"
V2_INFER = "/v2/models/{name}/infer"
V2_INFER_VERSION = "/v2/models/{name}/versions/{version}/infer"
_BINARY_TYPE = b"application/octet-stream"
_HEADER_LENGTH = codec_v2.HEADER_LENGTH.encode("latin-1")


Reply = tuple[bytes, list[tuple[bytes, bytes]], bytes]
"""A 200 answer: the body, the headers (without content type and length), the content type."""


class HotEndpoint(ABC):
    """An ASGI endpoint: `answer` gives the 200 reply; an `AuguryError` it raises becomes the error
    response, and is recorded in ``scope["state"]`` for the access log and the metrics."""

    def __init__(self, service: Service) -> None:
        self.s = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body, headers, media_type = await self.answer(scope, receive)
            status = 200
        except AuguryError as exc:
            state = scope.setdefault("state", {})
            state["error"] = type(exc).__name__
            state["error_message"] = str(exc)
            (status, body, headers), media_type = error_reply(exc, state.get("request_id")), JSON_TYPE
        await send_whole(scope, send, status, body, headers, media_type)

    @abstractmethod
    async def answer(self, scope: Scope, receive: Receive) -> Reply:
        """The reply to a request whose path matched this endpoint's route."""


class Predict(HotEndpoint):
    """``POST /v1/models/{name}:predict``."""

    async def answer(self, scope: Scope, receive: Receive) -> Reply:
        s = self.s
        s.check(scope["path_params"])
        settings = s.settings
        headers = request_headers(scope)
        body = await receive_body(receive, headers, settings.max_body_bytes)
        examples, parameters = codec_v1.parse_predict(
            parse_json(body), s.router.schema, ignore_unknown=settings.ignore_unknown_fields,
            max_instances=settings.max_instances, cast=s.router.cast)
        answers = await s.predict_or_miss(examples, deadline_of(headers, parameters))
        return dump_json(codec_v1.encode_predict(answers, examples)), provenance_headers(answers), JSON_TYPE


class Lookup(HotEndpoint):
    """``GET /v1/models/{name}/predictions/{key}``."""

    async def answer(self, scope: Scope, receive: Receive) -> Reply:
        s = self.s
        params = scope["path_params"]
        s.check(params)
        key = params["key"]
        memo = s.memo
        if memo is not None:
            started = time.perf_counter()
            kept = memo.get(key)
            if kept is not None:
                body = answer_body(key, kept, time.time())
                s.served_kept(key, body, started)
                return body, list(kept.provenance.headers), JSON_TYPE
        answer = await s.lookup(key)
        body = dump_json(codec_v1.encode_lookup(key, answer))
        headers = provenance_headers([answer])
        if memo is not None:
            memo.keep(key, answer, body, headers)
        return body, headers, JSON_TYPE


class Infer(HotEndpoint):
    """``POST /v2/models/{name}[/versions/{version}]/infer``."""

    async def answer(self, scope: Scope, receive: Receive) -> Reply:
        s = self.s
        s.check(scope["path_params"])
        settings = s.settings
        headers = request_headers(scope)
        body = await receive_body(receive, headers, settings.max_body_bytes)
        header, binary = codec_v2.split_body(body, headers.get(codec_v2.HEADER_LENGTH))
        req = codec_v2.parse_infer(parse_json(header), binary, s.router.schema,
                                   ignore_unknown=settings.ignore_unknown_fields,
                                   max_instances=settings.max_instances, cast=s.router.cast)
        answers = await s.predict(req.examples, deadline_of(headers, req.parameters))
        content, header_length = codec_v2.encode_infer(
            req, answers, s.name, model_versions(answers), s.outputs(answers))
        out = provenance_headers(answers)
        if header_length is None:
            return content, out, JSON_TYPE
        out.append((_HEADER_LENGTH, str(header_length).encode()))
        return content, out, _BINARY_TYPE


def hot_routes(service: Service) -> list[BaseRoute]:
    """The Starlette routes of the hot endpoints (for the app's table; `HotDispatch` finds them there)."""
    infer = Infer(service)
    return [
        Route(V2_INFER, infer, methods=["POST"]),
        Route(V2_INFER_VERSION, infer, methods=["POST"]),
        Route(V1_PREDICT, Predict(service), methods=["POST"]),
        Route(V1_LOOKUP, Lookup(service), methods=["GET"]),
    ]


class Hot(NamedTuple):
    """A hot route: its endpoint, and its template (what the metrics count it under)."""

    endpoint: HotEndpoint
    template: str


class HotDispatch:
    """Answers requests for a hot route directly (`match`, then `serve`); the app sends the rest through
    Starlette.

    Matches exactly what the routes' patterns match (a ``{name}`` or ``{version}`` is one non-empty path
    segment, a ``{key:path}`` anything), for GET and POST only, without a ``root_path``.
    """

    def __init__(self, routes: list[BaseRoute], books: Bookkeeping) -> None:
        found: dict[str, Hot] = {r.path: Hot(r.endpoint, r.path) for r in routes
                                 if isinstance(r, Route) and isinstance(r.endpoint, HotEndpoint)}
        self._predict = found.get(V1_PREDICT)
        self._lookup = found.get(V1_LOOKUP)
        self._infer = found.get(V2_INFER)
        self._infer_version = found.get(V2_INFER_VERSION)
        self._books = books

    def match(self, scope: Scope) -> tuple[Hot, dict[str, Any]] | None:
        """The hot route `scope` asks for and its path parameters, or None."""
        if scope["type"] != "http" or scope.get("root_path"):
            return None
        return self._match(scope["method"], scope["path"])

    async def serve(self, hot: Hot, params: dict[str, Any], scope: Scope, receive: Receive,
                    send: Send) -> None:
        """Answer a request `match` recognised, with its id, metrics and log line."""
        started = time.perf_counter()
        books = self._books
        rid = books.ids.of(scope)
        scope["path_params"] = params
        endpoint = hot.endpoint
        metrics = books.metrics
        metrics.requests_in_flight += 1
        status, error, message = 500, None, None
        try:
            try:
                body, headers, media_type = await endpoint.answer(scope, receive)
                status = 200
            except AuguryError as exc:
                error, message = type(exc).__name__, str(exc)
                (status, body, headers), media_type = error_reply(exc, rid), JSON_TYPE
            except ClientDisconnect:  # nobody to answer
                status, error, message = 499, "ClientDisconnect", "the client went away before its body came"
                return
            except Exception as exc:
                error, message = type(exc).__name__, internal_error(scope, rid, exc)
                body, headers, media_type = dump_json({"error": message}), [], JSON_TYPE
            headers.append((b"x-request-id", rid.encode("ascii")))
            await send_whole(scope, send, status, body, headers, media_type)
        finally:
            metrics.requests_in_flight -= 1
            books.finish(scope, rid, hot.template, status, time.perf_counter() - started, error, message)

    def _match(self, method: str, path: str) -> tuple[Hot, dict[str, Any]] | None:
        if method == "POST":
            if path.startswith("/v1/models/") and path.endswith(":predict"):
                name = path[11:-8]
                if name and "/" not in name and self._predict is not None:
                    return self._predict, {"name": name}
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                parts = path[11:-6].split("/")
                if len(parts) == 1 and parts[0] and self._infer is not None:
                    return self._infer, {"name": parts[0]}
                if (len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]
                        and self._infer_version is not None):
                    return self._infer_version, {"name": parts[0], "version": parts[2]}
        elif method == "GET" and path.startswith("/v1/models/"):
            name, slash, rest = path[11:].partition("/")
            if name and slash and rest.startswith("predictions/") and self._lookup is not None:
                return self._lookup, {"name": name, "key": rest[12:]}
        return None
