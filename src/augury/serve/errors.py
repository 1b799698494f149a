"""The one place where augury's errors become HTTP status codes (the core knows nothing of HTTP).

=====================================  ======  ==========================================================
error                                  status  when
=====================================  ======  ==========================================================
`BodyTooLarge`, `TooManyInstances`     413     body over --max-body-bytes, rows over --max-instances
`UnsupportedEncoding`                  415     a Content-Encoding other than gzip, deflate or identity
`InputError` (`SchemaError` too)       400     malformed JSON, wrong shape or datatype, missing feature,
                                               unknown field, NaN the model cannot take, bad header
`UnscorableError`                      422     the model raised on this example (others are unaffected)
`NotFoundError`, `VersionNotFound...`  404     unknown model or version, a key that was never precomputed
`FeaturesChangedError`                 409     static mode: a key sent with features other than those its
                                               stored prediction was computed from
`OverloadedError`                      503     the batcher's queue is full (with ``Retry-After``)
`StoreUnavailable`, `StoreError`       503     the prediction store cannot be reached now, or failed in a way
                                               its backend does not classify (static mode, key lookups), with
                                               ``Retry-After``; the body says only that, with the request id
`StoreBroken`                          500     the store answered but cannot serve (a corrupt record, a
                                               refused login): retrying will not help; logged with the cause
`DeadlineExceeded`                     504     the request's deadline passed before it was scored
any other `AuguryError`                500     a model that broke its contract, a bug; the body says only
                                               that, with the request id (`public_message`)
=====================================  ======  ==========================================================

Every error body is ``{"error": "<message>"}``. The error classes defined here are the server's own
(HTTP-layer limits and the per-example model failure); they still derive from augury's hierarchy.

**What the client is told** (`public_message`). A 4xx message is about the client's own input and says
what is wrong with it. A store failure's message is the server's business: it names the database's path
and SQLite's own words (``no such table: augury_pointer``), so the client gets only that the store cannot
answer and the request id, and the access log line with that id keeps the cause; so does a 500's (a
model's or a library's words, an exception class: `INTERNAL_ERROR`). Whatever a message
echoes of the request (a key, a name) is cut to its first `ECHO_CHARS` characters, a path to `PATH_CHARS`
(`quoted`, `clipped`), and a whole message to `MESSAGE_CHARS`, so that a 1 MB key gets neither a 1 MB
response nor a 1 MB log line.
"""

from __future__ import annotations

import math

from augury.errors import (
    AuguryError,
    DeadlineExceeded,
    FeaturesChangedError,
    InputError,
    NotFoundError,
    OverloadedError,
    PredictionError,
    StoreBroken,
    StoreError,
    StoreUnavailable,
    VersionNotFoundError,
)


class BodyTooLarge(InputError):
    """The request body is larger than the server accepts (--max-body-bytes)."""


class TooManyInstances(InputError):
    """The request holds more instances (rows) than the server accepts in one request (--max-instances)."""


class UnsupportedEncoding(InputError):
    """The request body is compressed with an encoding the server does not read."""


class UnscorableError(PredictionError):
    """The model raised on one example of a well-formed request; the other requests it was batched with
    were scored (the batch path writes such a row to its errors file)."""


#: how much of a key or a name a message echoes (`quoted`, `clipped`).
ECHO_CHARS = 64
#: how much of a request's path a message or a log line echoes (a path can hold a key of any length).
PATH_CHARS = 256
#: the most of any one error message sent to a client or written in a log line.
MESSAGE_CHARS = 1024
#: a store failure, as the client is told it (the cause is in the log line with the request id).
STORE_UNAVAILABLE = "the prediction store cannot answer right now; retry later"
#: a 500 (a model that broke its contract, a bug), as the client is told it: its message names the
#: server's internals (a path, a library's words, an exception class), so it goes to the log line only.
INTERNAL_ERROR = "internal error; the server's log has the cause"

#: most specific first: the first class an error is an instance of gives its status.
_STATUS: tuple[tuple[type[AuguryError], int], ...] = (
    (BodyTooLarge, 413),
    (TooManyInstances, 413),
    (UnsupportedEncoding, 415),
    (InputError, 400),
    (UnscorableError, 422),
    (VersionNotFoundError, 404),
    (NotFoundError, 404),
    (FeaturesChangedError, 409),
    (OverloadedError, 503),
    (StoreBroken, 500),
    (StoreError, 503),
    (DeadlineExceeded, 504),
)


def status_of(error: AuguryError) -> int:
    """The HTTP status code for `error`."""
    for cls, status in _STATUS:
        if isinstance(error, cls):
            return status
    return 500


def headers_of(error: AuguryError) -> dict[str, str]:
    """Extra response headers for `error`: ``Retry-After`` (whole seconds) for overload and store failure."""
    if isinstance(error, OverloadedError | StoreUnavailable):
        return {"retry-after": str(max(1, math.ceil(error.retry_after_s)))}
    if isinstance(error, StoreError) and not isinstance(error, VersionNotFoundError | StoreBroken):
        return {"retry-after": "1"}
    return {}


def public_message(error: AuguryError, request_id: str | None = None) -> str:
    """What the client is told of `error` (see the module docstring): for a store failure that the store
    cannot answer now, for a 500 only that the server failed, each with `request_id` (the log line with
    that id has the cause); otherwise the message, cut to `MESSAGE_CHARS`."""
    rid = f" (request id {request_id})" if request_id is not None else ""
    if isinstance(error, StoreError) and not isinstance(error, VersionNotFoundError | StoreBroken):
        return STORE_UNAVAILABLE + rid
    if status_of(error) == 500:
        return INTERNAL_ERROR + rid
    return clipped(str(error), MESSAGE_CHARS)


def clipped(text: str, limit: int = ECHO_CHARS) -> str:
    """`text`, or its first `limit` characters and how long it was: ``abc... (1,048,576 characters)``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def quoted(text: str | None, limit: int = ECHO_CHARS) -> str:
    """`text` as a message quotes what the client sent (``repr``), cut as `clipped` cuts it:
    ``'abc'... (1,048,576 characters)``."""
    if text is None or len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"
