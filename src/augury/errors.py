"""augury's errors: one hierarchy, no transport concepts.

Every error a user can cause or meet derives from `AuguryError`. The CLI prints `str(error)` and exits
non-zero; `serve/errors.py` alone maps these classes to HTTP status codes. Library errors (sqlite3,
redis, a model framework) are translated into these with ``raise ... from exc`` where they cross into
augury, so callers never have to catch a framework's exceptions.
"""

from __future__ import annotations


class AuguryError(Exception):
    """Base class of every error augury raises on purpose."""


class InputError(AuguryError):
    """The caller's data is wrong: a missing or unknown column, a bad type, an empty file, a bad value."""


class SchemaError(InputError):
    """Data does not fit the model's input schema (missing feature, unknown field, uncastable type)."""


class ModelLoadError(AuguryError):
    """A model file cannot be loaded: not a model, corrupt, unknown format, or an extra is missing."""


class MissingExtraError(ModelLoadError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        super().__init__(f"{what} needs the '{module}' package: pip install 'augury[{extra}]'")
        self.extra = extra
        self.module = module


class PredictionError(AuguryError):
    """The model raised while scoring, or returned a result of the wrong shape."""


class ConfigError(AuguryError):
    """A configuration value or file (checks TOML, manifest, store URL) is invalid."""


class StoreError(AuguryError):
    """The prediction store failed or refused an operation. A backend that can tell says which kind:
    `StoreUnavailable` (it cannot be reached now; retrying may help) or `StoreBroken` (it answered, but
    with corrupt data or a refusal; retrying will not help)."""


class StoreUnavailable(StoreError):
    """The prediction store cannot be reached now (connection refused or lost, a timeout, no free
    connection): the same call may succeed later, so a server answers 503 with ``Retry-After`` and a
    hybrid server computes instead."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreBroken(StoreError):
    """The prediction store answered but cannot serve: a corrupt record, a key of the wrong type, a refused
    login, a failed script. A server answers 500 and logs the cause; retrying will not help."""


class VersionNotFoundError(StoreError):
    """A store version that was asked for does not exist."""


class NotFoundError(AuguryError):
    """A named thing (model, key, version) is not there."""


class FeaturesChangedError(AuguryError):
    """A key was sent with features other than those its stored prediction was computed from, and there is
    no model to compute them with (a static server): the stored prediction would answer other features."""


class VerificationFailed(AuguryError):
    """One or more verification gates failed; `report` holds every gate's outcome."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class BatchError(AuguryError):
    """A batch run cannot start, cannot resume, or exceeded its bad-row threshold."""


class TooManyBadRows(BatchError):
    """More rows than the run allows could not be scored; they are listed in the errors file."""


class OverloadedError(AuguryError):
    """The server's queue is full; the request was shed and may be retried later."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(AuguryError):
    """A request's deadline passed before it was scored."""
