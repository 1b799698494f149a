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
`StoreError`                           503     the prediction store failed (static mode, key lookups)
`DeadlineExceeded`                     504     the request's deadline passed before it was scored
any other `AuguryError`                500     a model that broke its contract, a bug
=====================================  ======  ==========================================================

Every error body is ``{"error": "<message>"}``. The error classes defined here are the server's own
(HTTP-layer limits and the per-example model failure); they still derive from augury's hierarchy.
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
    StoreError,
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
    if isinstance(error, OverloadedError):
        return {"retry-after": str(max(1, math.ceil(error.retry_after_s)))}
    if isinstance(error, StoreError) and not isinstance(error, VersionNotFoundError):
        return {"retry-after": "1"}
    return {}
