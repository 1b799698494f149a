"""The prediction store contract (every backend keeps it; tests/store/test_contract.py checks them all).

A store holds immutable, numbered versions of precomputed predictions, one row per key, and a pointer to
the active version. `get_many(keys)` returns a list aligned with `keys`: a `StoredPrediction` for a hit,
`None` for a miss (an absent key, or one whose TTL has passed: TTL is enforced on read). Publishing writes
a whole new version first and only then switches the pointer in one atomic step, so a reader sees the old
version or the new one, never a mix; a crash mid-publish leaves the active version intact and the partial
one as an orphan that `gc` removes (DESIGN.md, invariant 5).

Rules every backend keeps (the contract suite checks them):

- Versions are numbered "1", "2", ... in the order publishes start, and a number is never reused, not
  even after its version is deleted or its publish failed.
- A publish that fails (bad input, a duplicate key, an exception from `batches`) deletes its partial
  version before raising; only a crash (kill -9, power loss) leaves one behind, as an orphan.
- A publish with no rows is allowed: it creates an empty version, in which every key is a miss.
- `computed_at` is kept to the microsecond; `ttl_s` makes a row a miss once `computed_at < now - ttl_s`.
- Errors: a caller's bad data or argument is `InputError`, an unknown version `VersionNotFoundError`,
  a refused operation or a failed backend `StoreError`; backend exceptions never escape.

**Write-back.** Beside the versions, and never in them (they stay immutable), a store keeps dynamic
predictions a server wrote back (`write_back`), one per (key, model version), each until its
`expires_at`: `written_back(keys, model_version)` returns the unexpired ones of that model version
(expiry is enforced on read, like TTL), and `prune_written_back` (also run by `gc`) deletes the expired.
They are not part of any version: `get_many` never returns them, and publishing, activating or deleting
a version leaves them alone. A server consults them after the active version misses (`serve.writeback`).
A backend whose storage expires keys itself (Redis) never keeps an expired row, so its
`prune_written_back` finds none and returns 0.

**Three faces.** A server needs only reading (`PredictionReader`) and write-backs (`WriteBacks`);
publishing and version administration (`VersionAdmin`) are for the CLI and batch jobs. `PredictionStore`
is all of them. A networked backend also takes a publish in parts (`Publishing`: begin, write batches
from any number of processes, commit or abort), so that a dataset's parts load in parallel and a publish
killed midway is known without a local lock.

**Errors.** `StoreUnavailable` (a `StoreError`) means the store cannot be reached now and the same call
may succeed later (a server answers 503 with Retry-After, a hybrid one computes); any other `StoreError`
means it failed or refused in a way that retrying will not fix (corrupt, misconfigured: a server answers
500 and logs the cause); `VersionNotFoundError` that the version asked for is not there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import msgspec
import pyarrow as pa

#: version states: being written by a live publish / complete / left by a publish that died (gc removes it).
LOADING = "loading"
READY = "ready"
ORPHAN = "orphan"

#: the columns a published batch carries besides the prediction columns (a `model_version` column, if
#: present, must equal the publish's `model_version`; it is not stored per row).
KEY_COLUMN = "key"
MODEL_VERSION_COLUMN = "model_version"
COMPUTED_AT_COLUMN = "computed_at"
#: an optional column of a published batch: the canonical feature key (`keys.feature_keys`, 32 hex digits)
#: of the features each row was computed from. A version published with it keeps the hash with each
#: record (as 16 bytes; `VersionInfo.features_hash`), so a server can tell a request whose features differ
#: from them (`serve.router`); a version without it keeps none, and its records are served by key alone.
FEATURES_KEY_COLUMN = "features_key"
#: the key of a version's `meta` naming the evaluator that computed its predictions (`ModelInfo.evaluator`,
#: from the batch run's metadata; absent when the predictions file did not record it).
EVALUATOR_META = "evaluator"
#: the key of a version's `meta` giving each prediction column's dtype (`schema.DTYPES` names), as its
#: values come back from the store: a server's v2 metadata and responses name the same datatype from it.
OUTPUT_DTYPES_META = "output_dtypes"
#: the key of a version's `meta` holding the input schema of the model that computed its predictions
#: (`Schema.to_list()`, from the batch run's metadata): a static server casts and hashes the features sent
#: with a key by it, to compare them with the record's features hash (absent in versions published before).
INPUTS_META = "inputs"


def iso(ts: float | None) -> str | None:
    """Unix seconds as an ISO 8601 UTC timestamp with microseconds (how augury writes times everywhere).

    Equal to ``datetime.fromtimestamp(ts, UTC).isoformat()`` with ``Z`` for ``+00:00`` (microseconds
    rounded half to even, as datetime does, and left out when zero), at a quarter of its cost: the
    date and time of day are formatted once per second (the server stamps every dynamic answer)."""
    if ts is None:
        return None
    fraction, whole = math.modf(ts)
    us = round(fraction * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1, us + 1_000_000
    second = _second(int(whole))
    return f"{second}.{us:06d}Z" if us else f"{second}Z"


@functools.lru_cache(maxsize=16)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat().removesuffix("+00:00")


def reads_block(store: object) -> bool:
    """Whether `store`'s reads wait on a network round trip, so that a server must read it off its event
    loop: a backend says so with a true ``network_reads`` attribute (Redis); SQLite and memory stores
    read in process and have none."""
    return bool(getattr(store, "network_reads", False))


@dataclass(frozen=True)
class VersionInfo:
    """One store version. `state` is READY once complete, LOADING while a live publish writes it, and
    ORPHAN when the publish that wrote it died before finishing (`gc` removes it)."""

    version: str
    model_version: str
    created_at: float
    row_count: int
    columns: tuple[str, ...]
    state: str
    active: bool = False
    ttl_s: float | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    #: whether its records carry the hash of the features they were computed from (FEATURES_KEY_COLUMN)
    features_hash: bool = False

    @property
    def evaluator(self) -> str | None:
        """The evaluator that computed this version's predictions, when its publish recorded one."""
        value = self.meta.get(EVALUATOR_META)
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "store_version": self.version,
            "model_version": self.model_version,
            "evaluator": self.evaluator,
            "created_at": iso(self.created_at),
            "row_count": self.row_count,
            "columns": list(self.columns),
            "state": self.state,
            "active": self.active,
            "ttl_s": self.ttl_s,
            "features_hash": self.features_hash,
            "meta": self.meta,
        }


class StoredPrediction(msgspec.Struct, frozen=True):
    """A precomputed prediction and where it came from. (A frozen msgspec Struct rather than a frozen
    dataclass: a server makes one per lookup, and it builds in 60 ns instead of 580.)"""

    key: str
    values: dict[str, Any]
    model_version: str
    store_version: str
    computed_at: float
    #: the 16-byte canonical hash of the features it was computed from (`keys`), None when its version
    #: kept none (FEATURES_KEY_COLUMN)
    features_hash: bytes | None = None

    def provenance(self) -> dict[str, Any]:
        return {
            "source": "static",
            "model_version": self.model_version,
            "store_version": self.store_version,
            "computed_at": iso(self.computed_at),
        }


class WrittenBack(msgspec.Struct, frozen=True):
    """A dynamic prediction written back to a store (outside its versions), served until `expires_at`
    (unix seconds)."""

    key: str
    values: dict[str, Any]
    model_version: str
    computed_at: float
    expires_at: float
    #: the 16-byte canonical hash of the features it was computed from (`keys`), None if not known
    features_hash: bytes | None = None


@runtime_checkable
class PredictionReader(Protocol):
    """What a server reads: lookups in the active version, and the active version's record."""

    url: str

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """Look up `keys` in the active version; results aligned with `keys`, `None` for a miss."""
        ...

    def active(self) -> VersionInfo | None:
        """The active version, or None before the first publish."""
        ...


@runtime_checkable
class WriteBacks(Protocol):
    """Dynamic predictions kept beside the versions (see the module docstring, "Write-back")."""

    def write_back(self, rows: Sequence[WrittenBack]) -> None:
        """Keep dynamic predictions beside the versions, each until its `expires_at`; a row replaces the
        one kept for the same key and model version (the last of several in `rows` wins)."""
        ...

    def written_back(self, keys: Sequence[str], model_version: str) -> list[WrittenBack | None]:
        """The unexpired write-backs of `keys` made by `model_version`, aligned with `keys`."""
        ...

    def prune_written_back(self) -> int:
        """Delete the expired write-backs; returns how many."""
        ...


@runtime_checkable
class VersionAdmin(Protocol):
    """Listing, switching and deleting versions."""

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first, orphans ('loading') included."""
        ...

    def activate(self, version: str) -> VersionInfo:
        """Make a ready version the active one, atomically."""
        ...

    def rollback(self, to: str | None = None) -> VersionInfo:
        """Activate `to`, or the newest ready version older than the active one (StoreError if none)."""
        ...

    def delete(self, version: str) -> None:
        """Delete a version: VersionNotFoundError if unknown, StoreError if active or still being written."""
        ...

    def gc(self, keep: int = 2) -> list[str]:
        """Delete orphans and all but the newest `keep` ready versions (never the active one, which is
        kept besides them); returns the deleted versions, oldest first."""
        ...


class PublishHandle(Protocol):
    """One publish in progress: `write` batches (from this handle or joined ones in other processes),
    then `commit` (ready, and active unless told not to: one atomic switch) or `abort` (nothing is left).
    A handle that joined a publish writes only; the one that began it commits or aborts."""

    version: str

    def write(self, batch: pa.RecordBatch) -> int:
        """Store one batch's rows; how many. InputError for a bad batch or a key already written."""
        ...

    def commit(self, activate: bool = True) -> str:
        """Mark the version ready (and active); StoreError if it was collected as an orphan meanwhile."""
        ...

    def abort(self) -> None:
        """Delete the partial version (left as an orphan for gc if even that fails)."""
        ...


@runtime_checkable
class Publishing(Protocol):
    """A store that takes a publish in parts: memory, SQLite (`sqlite_parts`) and Redis."""

    def begin_publish(self, *, model_version: str, ttl_s: float | None = None,
                      profile: dict[str, Any] | None = None,
                      meta: dict[str, Any] | None = None) -> PublishHandle:
        """Register a new 'loading' version and return the handle that writes and commits it."""
        ...

    def join_publish(self, version: str) -> PublishHandle:
        """A handle that writes parts of a publish begun elsewhere."""
        ...


@runtime_checkable
class SharedPublishing(Publishing, Protocol):
    """A store whose publish other processes join (SQLite, Redis; not memory, which lives in one process):
    `augury publish` loads a dataset's parts with a pool of writer processes (`augury.publish_pool`),
    each opening the store again from `reopen_args()` and joining the publish by its version."""

    #: how many writer processes load a dataset when the user does not say (measured per backend)
    publish_writers: int

    def reopen_args(self) -> tuple[str, dict[str, Any]]:
        """The URL and options with which `open_store(url, create=False, **options)` opens this same store
        in another process. (The URL keeps its password: never show or log it.)"""
        ...


@runtime_checkable
class PredictionStore(PredictionReader, WriteBacks, VersionAdmin, Protocol):
    """A versioned key -> prediction store. Implementations: memory, sqlite, redis."""

    def publish(
        self,
        batches: Iterable[pa.RecordBatch],
        *,
        model_version: str,
        ttl_s: float | None = None,
        profile: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
        activate: bool = True,
    ) -> VersionInfo:
        """Write a new version from `batches` (a `key` string column, a `computed_at` timestamp column and
        the prediction columns), mark it ready, and activate it atomically unless `activate` is False.
        A key that appears twice is an `InputError` and nothing is published."""
        ...

    def close(self) -> None: ...
