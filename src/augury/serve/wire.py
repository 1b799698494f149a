"""Bytes on and off the wire: bounded body reading, JSON in and out, the error body, deadlines.

JSON is parsed with msgspec (as fast as orjson here, integers of any size kept exact, and nesting
depth bounded by a RecursionError: the installed orjson 3.8 overflows the C stack and kills the process
on a body of 200,000 nested brackets). A document msgspec refuses is retried with the standard library,
which also reads ``NaN``/``Infinity`` literals, so that such a value gets a message about the feature it
was sent for rather than "malformed JSON". Responses are serialised with orjson (a NaN becomes ``null``).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from augury.errors import AuguryError, InputError
from augury.serve.errors import BodyTooLarge, UnsupportedEncoding, headers_of, public_message, status_of
from augury.serve.http_cycle import WHOLE_RESPONSE

DEADLINE_HEADER = "x-augury-deadline-ms"
#: the longest deadline a request may ask for (a day), so that a typo does not park a request forever.
MAX_DEADLINE_MS = 86_400_000.0


JSON_TYPE = b"application/json"

_decode = msgspec.json.Decoder().decode


def dump_json(content: Any) -> bytes:
    """`content` as JSON bytes (orjson; NumPy values allowed, NaN written as null)."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONResponse(Response):
    """A JSON response serialised with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dump_json(content)


def error_response(error: AuguryError, request_id: str | None) -> JSONResponse:
    """``{"error": message}`` with the status code, headers and message `serve.errors` gives `error` (a
    store failure's message names `request_id`, under which the access log keeps its cause)."""
    return JSONResponse({"error": public_message(error, request_id)}, status_code=status_of(error),
                        headers=headers_of(error))


def error_reply(error: AuguryError, request_id: str | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """`error_response` as raw parts: the status, the ``{"error": message}`` body and the ASGI headers."""
    return (status_of(error), dump_json({"error": public_message(error, request_id)}),
            raw_headers(headers_of(error)))


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name (latin-1, as Starlette reads them); the first of a repeated
    header wins, as with Starlette's ``Headers.get``."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}


async def receive_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The request body, decompressed if it says gzip or deflate; `BodyTooLarge` past `limit` bytes
    (announced by Content-Length, or counted while reading, or once decompressed)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {int(declared):,} bytes is larger than the limit of {limit:,} "
                           f"bytes (--max-body-bytes)")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than the limit of {limit:,} bytes (--max-body-bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedEncoding(f"Content-Encoding {encoding!r} is not supported; "
                                  f"use gzip, deflate or none")
    return _decompress(body, encoding, limit)


def raw_headers(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Response headers as ASGI wants them (names lower-cased, latin-1, as Starlette encodes them)."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def send_response(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                        media_type: bytes = JSON_TYPE) -> None:
    """Send a whole response: `headers` plus its content type and length."""
    headers.append((b"content-type", media_type))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_whole(scope: Scope, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                     media_type: bytes = JSON_TYPE) -> None:
    """`send_response` in one message where the server offers augury's whole-response extension
    (`serve.protocol`: ``augury serve``'s own HTTP protocol), else as the usual two."""
    extensions = scope.get("extensions")
    if extensions is not None and WHOLE_RESPONSE in extensions:
        headers.append((b"content-type", media_type))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": WHOLE_RESPONSE, "status": status, "headers": headers, "body": body})
    else:
        await send_response(send, status, body, headers, media_type)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InputError(f"request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"decompressed request body is larger than the limit of {limit:,} bytes "
                           f"(--max-body-bytes)")
    if not inflater.eof:
        raise InputError(f"request body is truncated {encoding} data")
    return out


def parse_json(data: bytes) -> Any:
    """A JSON document; InputError naming the problem if it is not one."""
    if not data:
        raise InputError("request body is empty; send a JSON document")
    try:
        return _decode(data)
    except RecursionError:
        raise InputError("request body is not valid JSON: it is nested too deeply") from None
    except msgspec.DecodeError as exc:
        first = exc
    try:  # NaN/Infinity literals and numbers past float range: let the schema cast say what is wrong
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise InputError(f"request body is not valid JSON: {first}") from None
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise InputError("request body is not valid JSON: a string holds a lone UTF-16 surrogate "
                         "(an unpaired \\ud800-\\udfff escape)") from None
    return doc


def deadline_of(headers: Mapping[str, str], parameters: Mapping[str, Any] | None = None) -> float | None:
    """The request's deadline as a `time.monotonic()` value, from the ``X-Augury-Deadline-Ms`` header or
    a ``deadline_ms`` parameter (ms from now), or a Triton ``timeout`` parameter (µs from now)."""
    ms: float | None = None
    text = headers.get(DEADLINE_HEADER)
    if text is not None:
        try:
            ms = float(text)
        except ValueError:
            raise InputError(f"X-Augury-Deadline-Ms must be a number of milliseconds, not {text!r}") from None
        where = "X-Augury-Deadline-Ms"
    elif parameters is not None and "deadline_ms" in parameters:
        ms, where = _number(parameters["deadline_ms"], "deadline_ms"), "parameter deadline_ms"
    elif parameters is not None and "timeout" in parameters:
        ms, where = _number(parameters["timeout"], "timeout") / 1000.0, "parameter timeout (µs)"
    if ms is None:
        return None
    if not 0 < ms <= MAX_DEADLINE_MS:
        raise InputError(f"{where} must be more than 0 and at most {MAX_DEADLINE_MS:.0f} ms, not {ms:g}")
    return time.monotonic() + ms / 1000.0


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"parameter {name} must be a number, not {value!r}")
    return float(value)
