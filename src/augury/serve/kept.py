"""What a kept prediction may answer: the features-changed check, and what the router keeps per version.

A stored prediction (of a version published from ``augury batch --key``) or a written-back one keeps the
canonical hash of the features it was computed from (`keys.RowKeys`); an example sent with a key and
features is answered from it only if its features hash the same (`FeatureCheck`, one per request, each
example hashed at most once). In static mode the features are cast and hashed by the input schema the
hit's store version recorded (`VersionRecord`, made once per version, which also holds the evaluator the
version recorded). `serve.router` uses both; see its docstring for what happens to a changed example.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from augury.errors import ConfigError, SchemaError, StoreError
from augury.keys import RowKeys
from augury.schema import Schema
from augury.serve.casting import RowCaster
from augury.serve.scoring import Row
from augury.store import PredictionStore, StoredPrediction
from augury.store.base import INPUTS_META, VersionInfo
from augury.store.versions import info_of

if TYPE_CHECKING:
    from augury.serve.answers import Example

log = logging.getLogger(__name__)

#: most store versions whose record is remembered (all are forgotten past this).
REMEMBERED_VERSIONS = 64


class VersionRecord:
    """What the router uses of one store version's record, worked out once: the evaluator, and (static
    mode, for a version with features hashes) the caster and row hash of the input schema it recorded
    (None when it recorded none, or one that cannot be read: nothing to compare)."""

    __slots__ = ("cast", "evaluator", "row_keys")

    def __init__(self, info: VersionInfo | None, hashing: bool) -> None:
        self.evaluator = info.evaluator if info is not None else None
        self.cast: RowCaster | None = None
        self.row_keys: RowKeys | None = None
        recorded = info.meta.get(INPUTS_META) if info is not None and info.features_hash and hashing else None
        if isinstance(recorded, list) and recorded:
            try:
                schema = Schema.from_list(recorded)
            except ConfigError as exc:
                assert info is not None
                log.warning("store version %s recorded an unreadable input schema (%s); its keys are "
                            "answered without comparing the features sent with them", info.version, exc)
                return
            self.cast, self.row_keys = RowCaster(schema), RowKeys(schema)


class VersionRecords:
    """What each store version recorded (`VersionRecord`), read once per version (versions never change)
    and remembered, at most `REMEMBERED_VERSIONS` of them. `hashing`: static mode compares the features
    sent with a key (by the schema the version recorded); `ignore_unknown`: features the schema does not
    name are dropped rather than refused."""

    def __init__(self, store: PredictionStore, hashing: bool, ignore_unknown: bool) -> None:
        self._store = store
        self._hashing = hashing
        self._ignore_unknown = ignore_unknown
        self._by_version: dict[str, VersionRecord] = {}

    def unknown(self, versions: set[str]) -> set[str]:
        """Those of `versions` not remembered yet."""
        return versions - self._by_version.keys()

    def record(self, version: str) -> VersionRecord:
        """What store `version` recorded, remembered; StoreError if the store fails to say (asked again
        next time)."""
        found = self._by_version.get(version)
        if found is not None:
            return found
        info = info_of(self._store, version)
        if len(self._by_version) >= REMEMBERED_VERSIONS:
            self._by_version.clear()
        found = self._by_version[version] = VersionRecord(info, self._hashing)
        return found

    def evaluator(self, hit: StoredPrediction) -> str | None:
        """The evaluator recorded with `hit`'s store version (None if it recorded none); a store that fails
        to say is asked again for the next answer."""
        try:
            return self.record(hit.store_version).evaluator
        except StoreError:
            return None

    def hash_sent(self, hit: StoredPrediction, sent: Mapping[str, Any]) -> bytes | None:
        """The canonical hash of features `sent` with `hit`'s key, cast by the input schema its store
        version recorded (None when it recorded none: nothing to compare). SchemaError if they do not fit
        it; StoreError if the store fails to say what the version recorded."""
        recorded = self.record(hit.store_version)
        if recorded.cast is None or recorded.row_keys is None:
            return None
        return bytes.fromhex(recorded.row_keys(recorded.cast(sent, self._ignore_unknown)))

    def warm_up(self) -> None:
        """Compile the row hash now if the active version can be compared (`RowKeys.warm_up`), rather than
        on the first request that sends features with a key."""
        try:
            active = self._store.active()
            recorded = self.record(active.version) if active is not None else None
        except StoreError:
            return  # (the first lookup will say so)
        if recorded is not None and recorded.row_keys is not None:
            recorded.row_keys.warm_up()


class FeatureCheck:
    """One request's keyed examples and their features: whether a kept prediction (its `features_hash`)
    was computed from them, each example hashed at most once, and which were not (`changed`).

    `digest` hashes a cast row (`Router._digest`); None compares nothing (`trust_keys`, static mode).
    `digest_sent` (static mode: `VersionRecords.hash_sent`) hashes the features an example was sent
    with, by the schema a stored prediction's version recorded; None compares nothing (`trust_keys`,
    other modes)."""

    __slots__ = ("_digests", "_examples", "changed", "digest_row", "digest_sent")

    def __init__(self, examples: list[Example], digest: Callable[[Row], bytes] | None,
                 digest_sent: Callable[[StoredPrediction, Mapping[str, Any]], bytes | None] | None = None,
                 ) -> None:
        self._examples = examples
        self.digest_row = digest
        self.digest_sent = digest_sent
        self._digests: dict[int, bytes] = {}
        #: the examples whose features differ from those of a kept prediction of their key
        self.changed: set[int] = set()

    @property
    def hashing(self) -> bool:
        return self.digest_row is not None

    def digest(self, i: int) -> bytes:
        """Example `i`'s features hash (it has a row), computed once."""
        found = self._digests.get(i)
        if found is None:
            assert self.digest_row is not None
            row = self._examples[i].row
            assert row is not None
            found = self._digests[i] = self.digest_row(row)
        return found

    def same(self, i: int, kept: bytes | None) -> bool:
        """Whether a prediction kept with features hash `kept` answers example `i`: always, unless the
        example came with a key and features and the hash differs (then it is `changed`)."""
        if kept is None or self.digest_row is None:
            return True
        example = self._examples[i]
        if example.key is None or example.row is None:
            return True
        if self.digest(i) == kept:
            return True
        self.changed.add(i)
        return False

    def same_sent(self, i: int, hit: StoredPrediction) -> bool:
        """Static mode's `same`: whether stored `hit` answers example `i`: always, unless the example came
        with features (`Example.sent`) and both `hit` and its version's recorded schema let them be hashed,
        and the hashes differ (then it is `changed`). SchemaError, naming the instance, if they do not fit
        that schema. (A key-only example, or one without a kept hash, pays nothing.)"""
        if hit.features_hash is None or self.digest_sent is None:
            return True
        sent = self._examples[i].sent
        if sent is None:
            return True
        try:
            digest = self.digest_sent(hit, sent)
        except SchemaError as exc:
            raise SchemaError(f"instance {i}: {exc}") from None
        if digest is None or digest == hit.features_hash:
            return True
        self.changed.add(i)
        return False
