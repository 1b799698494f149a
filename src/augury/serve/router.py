"""Hybrid routing: answer each example from the prediction store when it holds it, compute the rest.

For every example of a request: its key is the one given, or the canonical hash of its cast feature
values (`keys.RowKeys`, equal to what `augury batch` writes: DESIGN.md, invariant 3). The keys are looked
up in the store's active version in one `get_many`; hits are answered from the store, misses from the
write-backs (`serve.writeback`) if there are any, and what is left goes to the dynamic batcher as one
request. Answers come back in request order, each with its provenance (invariant 4). The three modes are
this one router with parts missing: static has no model (a miss is a 404, or with several keys in one v1
request that key's place marked: `predict_or_miss`), dynamic has no store.

An in-process store (SQLite, memory) is read on the event loop for up to `INLINE_LOOKUP_KEYS` keys and on
a thread above that: measured on the SQLite store, `get_many` takes ~7 µs for 1 key and ~180 µs for 64,
while a thread hop adds ~25 µs and holds the GIL for most of the decode anyway. A store whose reads wait
on the network (`reads_block`: Redis) is never read on the event loop: every call to it (lookups,
write-backs, a version's record, the active version for a 404's message) goes through one executor of
`STORE_THREADS` threads, so a slow or stopped store holds threads, never the loop; lookups are merged
across requests into one call per round trip (`store_reads`). A store version
published while the server runs is picked up by the store itself on the next lookup (SQLite checks
``PRAGMA data_version``; Redis readers follow a pub/sub notification).

In hybrid mode a failed store lookup falls back to the model for every example (logged and counted in
``augury_store_errors_total``); only key-only examples, which the model cannot answer, then fail (503).
A stored prediction whose columns differ from the model's outputs (published by another model) is
treated as a miss, as is one made by another model version when `require_version_match` is set.

**Features that changed.** A stored prediction (of a version published from `augury batch --key`) and a
written-back one keep the canonical hash of the features they were computed from. An example that carries
a key *and* features is answered from them only if its features hash the same (`keys.RowKeys`: one row
hash, ~2 µs compiled, paid only when a kept prediction has a hash; a key-only example pays nothing);
otherwise it is computed like a miss, its provenance saying ``reason: "features_changed"``, and counted
in ``augury_features_changed_total``. `trust_keys` (``--trust-keys``) turns the comparison off: the key
alone decides, as for users whose keys are authoritative. A prediction kept without a hash (a version
published before hashes, or without key columns, where the key is the hash) is served by key as before.
A static server has no model, so no schema of its own: the codec keeps a keyed instance's features as
sent (`Example.sent`), and they are cast and hashed by the input schema the hit's store version recorded
when it was published (``INPUTS_META``; a `RowCaster` and `RowKeys` made once per version). Nothing can
compute changed features there, so they are refused: `FeaturesChangedError` (409) for one example, a
`Conflict` in the example's place among several (`predict_or_miss`), counted in the same metric. A
version that recorded no schema is answered by key, as before.

Provenance names the evaluator that made each answer (`augury.models.evaluator`): the live model's for
a computed or written-back answer, and for a stored one the evaluator its store version recorded when it
was published (None when it did not), read once per version: versions never change.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from augury.errors import FeaturesChangedError, NotFoundError, StoreError
from augury.keys import RowKeys
from augury.models import Model
from augury.monitor import ServeMetrics
from augury.schema import Schema
from augury.serve.answers import Answer, Conflict, Example, static_provenance
from augury.serve.batcher import Batcher
from augury.serve.casting import RowCaster
from augury.serve.errors import UnscorableError, quoted
from augury.serve.kept import FeatureCheck, VersionRecords
from augury.serve.scoring import Outcome, Refused, Row
from augury.serve.store_reads import StoreReads
from augury.serve.writeback import Cached, WriteBack
from augury.store import PredictionStore, StoredPrediction, VersionInfo
from augury.store.base import iso, reads_block

log = logging.getLogger(__name__)

#: lookups of up to this many keys run on the event loop; larger ones on a thread (in-process stores).
INLINE_LOOKUP_KEYS = 64
#: threads that call a networked store for the server (at most as many round trips at once; the store's
#: own connection pool is bounded as well).
STORE_THREADS = 16

T = TypeVar("T")
#: a failing store is logged at most this often (every failure is counted in the metrics).
STORE_WARNING_EVERY_S = 10.0
#: the provenance `reason` of an example computed because its features differ from the kept prediction's.
FEATURES_CHANGED = "features_changed"


class Router:
    """Answers examples from the store's active version, the write-backs and the model, in that order."""

    def __init__(self, *, model: Model | None, store: PredictionStore | None,
                 batcher: Batcher[Row, Outcome] | None, cache: WriteBack | None,
                 metrics: ServeMetrics, require_version_match: bool = False,
                 trust_keys: bool = False, ignore_unknown: bool = False) -> None:
        self.model = model
        self.store = store
        self.schema: Schema | None = model.info.inputs if model is not None else None
        #: casts request rows to `schema` (None in static mode)
        self.cast = RowCaster(self.schema) if self.schema is not None else None
        self._row_keys = RowKeys(self.schema) if self.schema is not None else None
        self.model_version = model.info.version if model is not None else None
        #: the live model's evaluator (`ModelInfo.evaluator`), None in static mode
        self.evaluator = model.info.evaluator if model is not None else None
        self._batcher = batcher
        self._cache = cache
        self._metrics = metrics
        self._outputs = frozenset(model.info.outputs.names) if model is not None else None
        self._require_match = require_version_match
        #: whether a kept prediction's features hash is compared with a keyed example's features
        self._compare = not trust_keys and self._row_keys is not None
        #: static mode: whether the features sent with a key are compared (by its version's recorded schema)
        self._compare_sent = not trust_keys and model is None and store is not None
        #: what each store version recorded, remembered (`kept.VersionRecords`; None without a store)
        self._versions = (VersionRecords(store, self._compare_sent, ignore_unknown)
                          if store is not None else None)
        #: the executor of a store whose reads wait on the network (None: read in process)
        self._remote = (ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="augury-store")
                        if store is not None and reads_block(store) else None)
        #: its lookups, merged across requests (`store_reads`)
        self._reads = (StoreReads(store, self._remote)
                       if store is not None and self._remote is not None else None)
        self._warned_at = -math.inf
        self._unwarned = 0
        if self._row_keys is not None and self.needs_keys:
            self._row_keys.warm_up()
        elif self._compare_sent and self._versions is not None:
            self._versions.warm_up()

    @property
    def needs_keys(self) -> bool:
        """Whether examples without a key need their feature hash (only to look something up)."""
        return self.store is not None or self._cache is not None

    async def predict(self, examples: list[Example], deadline: float | None = None) -> list[Answer]:
        """One answer per example, in order. NotFoundError for a key-only example nobody holds;
        UnscorableError when the model refused an example; what the batcher raises otherwise."""
        if self.store is None and self._cache is None:  # dynamic mode: the model answers everything
            rows = [ex.row for ex in examples]
            if None in rows:
                first = rows.index(None)
                raise self._not_found(examples[first].key, first, None)
            return (await self._computed(rows, deadline))[0]  # type: ignore[arg-type]
        answers: list[Answer | None] = [None] * len(examples)
        keys = [self._key(ex) for ex in examples]
        pending = list(range(len(examples)))
        store_failed: StoreError | None = None
        unusable: dict[int, StoredPrediction] = {}
        features = FeatureCheck(examples, self._digest if self._compare else None,
                             self._hash_sent())
        if self.store is not None:
            try:
                pending = await self._from_store(keys, pending, answers, unusable, features)
            except StoreError as exc:
                if self.model is None:
                    raise
                store_failed = exc
                self._store_failed(exc)
        if self.model is None and features.changed:  # static: nothing can compute the changed features
            self._metrics.observe_features_changed(len(features.changed))
            first = min(features.changed)
            raise FeaturesChangedError(self._conflict(keys[first], first if len(examples) > 1 else None))
        if self._cache is not None and pending and not (store_failed is not None and self._cache.reads_store):
            pending = await self._from_write_back(keys, pending, answers, features)  # (same store: down)
        lookups = [i for i in pending if examples[i].row is None]
        if lookups:
            if store_failed is not None:
                raise store_failed
            first = lookups[0]
            if first in unusable:
                raise self._unusable(unusable[first], first)
            raise self._not_found(keys[first], first, await self._active_quietly())
        if pending:
            await self._compute(examples, keys, pending, answers, deadline, features)
        if features.changed:
            self._metrics.observe_features_changed(len(features.changed))
            for i in features.changed:
                answer = answers[i]
                if answer is not None:
                    answers[i] = Answer(answer.values, {**answer.provenance, "reason": FEATURES_CHANGED})
        return [a for a in answers if a is not None]

    async def predict_or_miss(self, examples: list[Example], deadline: float | None = None,
                              ) -> Sequence[Answer | Conflict | None]:
        """`predict`, except in static mode for several examples: a key the store does not hold is None in
        its place instead of failing them all (one example alone still gets NotFoundError), and a key sent
        with features other than its stored prediction's is a `Conflict` there (one alone:
        FeaturesChangedError). A static catalogue rarely holds every key a client asks for, and the others
        need not wait for a retry."""
        if self.model is not None or len(examples) < 2:
            return await self.predict(examples, deadline)
        assert self.store is not None  # static mode: every example is a key (the codecs see to it)
        answers: list[Answer | None] = [None] * len(examples)
        keys: list[str | None] = [ex.key for ex in examples]
        features = FeatureCheck(examples, None, self._hash_sent())
        await self._from_store(keys, list(range(len(examples))), answers, {}, features)
        if not features.changed:
            return answers
        self._metrics.observe_features_changed(len(features.changed))
        return [Conflict(keys[i] or "") if i in features.changed else answer
                for i, answer in enumerate(answers)]

    async def lookup(self, key: str) -> Answer:
        """The stored (or cached) prediction of `key`; NotFoundError if there is none. One key: read on the
        event loop from an in-process store (see INLINE_LOOKUP_KEYS), through the executor from a
        networked one."""
        if self.store is None and self._cache is None:
            raise NotFoundError("this server has no prediction store (dynamic mode): nothing can be looked "
                                "up by key; POST the example's features to :predict or /infer instead")
        unusable: StoredPrediction | None = None
        if self.store is not None:
            hit = (await self._reads.get_many([key]) if self._reads is not None
                   else self.store.get_many([key]))[0]
            if hit is not None:
                if self._remote is not None:  # an in-process store's records are read on first use
                    await self._remember([hit])
                if self._usable(hit):
                    self._metrics.observe_store(1, 0)
                    return Answer(hit.values, static_provenance(hit, time.time(), self._evaluator(hit)))
                unusable = hit
            self._metrics.observe_store(0, 1)
        if self._cache is not None:
            answers: list[Answer | None] = [None]
            if self._remote is not None and self._cache.reads_store:
                await self._call(self._from_cache, [key], [0], answers)
            else:
                self._from_cache([key], [0], answers)
            if answers[0] is not None:
                return answers[0]
        if unusable is not None:
            raise self._unusable(unusable, None)
        raise self._not_found(key, None, await self._active_quietly())

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`: through the executor for a networked store, else here on the event loop."""
        if self._remote is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._remote, fn, *args)

    async def _remember(self, hits: Sequence[StoredPrediction | None]) -> None:
        """Networked store: read the record of each store version among `hits` not yet remembered, through
        the executor, so that the evaluator and the sent features' hash are found without a round trip on
        the loop (once per version: versions never change). A failure is left for them to meet."""
        if self._remote is None or self._versions is None:
            return
        for version in self._versions.unknown({h.store_version for h in hits if h is not None}):
            try:
                await self._call(self._versions.record, version)
            except StoreError:
                return

    def _evaluator(self, hit: StoredPrediction) -> str | None:
        """The evaluator `hit`'s store version recorded (`VersionRecords.evaluator`)."""
        assert self._versions is not None
        return self._versions.evaluator(hit)

    def _hash_sent(self) -> Callable[[StoredPrediction, Mapping[str, Any]], bytes | None] | None:
        """`FeatureCheck`'s hash of features sent with a key (static mode), or None: nothing to compare."""
        return self._versions.hash_sent if self._compare_sent and self._versions is not None else None

    async def _active_quietly(self) -> VersionInfo | None:
        """The active version for a 404's message (None if there is no store or it cannot say)."""
        if self.store is None:
            return None
        try:
            return await self._call(self.store.active)
        except StoreError:
            return None

    def _store_failed(self, exc: StoreError) -> None:
        """Count a failed lookup; log it, at most once every `STORE_WARNING_EVERY_S` seconds."""
        self._metrics.store_errors.inc()
        now = time.monotonic()
        if now - self._warned_at < STORE_WARNING_EVERY_S:
            self._unwarned += 1
            return
        log.warning("prediction store lookup failed; computing the examples instead (%d more failures "
                    "since the last warning): %s", self._unwarned, exc)
        self._warned_at, self._unwarned = now, 0

    def _key(self, ex: Example) -> str | None:
        if ex.key is not None:
            return ex.key
        if ex.row is not None and self._row_keys is not None and self.needs_keys:
            return self._row_keys(ex.row)
        return None

    def _digest(self, row: Row) -> bytes:
        """The canonical hash of a cast row, as the 16 bytes a store keeps."""
        assert self._row_keys is not None
        return bytes.fromhex(self._row_keys(row))

    async def _from_store(self, keys: list[str | None], pending: list[int], answers: list[Answer | None],
                          unusable: dict[int, StoredPrediction], features: FeatureCheck | None = None,
                          ) -> list[int]:
        assert self.store is not None
        asked = [i for i in pending if keys[i] is not None]
        wanted = [k for k in (keys[i] for i in asked) if k is not None]
        if not wanted:
            return pending
        if self._reads is not None:
            hits = await self._reads.get_many(wanted)
            await self._remember(hits)
        elif len(wanted) <= INLINE_LOOKUP_KEYS:
            hits = self.store.get_many(wanted)
        else:
            hits = await asyncio.to_thread(self.store.get_many, wanted)
        now = time.time()
        found = 0
        for i, hit in zip(asked, hits, strict=True):
            if hit is None:
                continue
            if not self._usable(hit):
                unusable[i] = hit
            elif features is None or (features.same(i, hit.features_hash) and features.same_sent(i, hit)):
                answers[i] = Answer(hit.values, static_provenance(hit, now, self._evaluator(hit)))
                found += 1
        self._metrics.observe_store(found, len(wanted) - found)
        return [i for i in pending if answers[i] is None]

    def _conflict(self, key: str | None, index: int | None) -> str:
        """The message for a key sent with features other than its stored prediction's (static mode)."""
        where = f"instance {index}: " if index is not None else ""
        return (f"{where}the features sent with key {quoted(key)} differ from those its stored prediction "
                f"was computed from; this server has no model to compute them (static mode): send the key "
                f"alone for the stored prediction, or the features to a server with the model (hybrid mode)")

    def _usable(self, hit: StoredPrediction) -> bool:
        if self._outputs is None:
            return True
        if self._require_match and hit.model_version != self.model_version:
            return False
        return hit.values.keys() == self._outputs

    def _from_cache(self, keys: list[str | None], pending: list[int],
                    answers: list[Answer | None]) -> list[int]:
        """`_from_write_back` for a lookup by key (one key: read on the event loop)."""
        assert self._cache is not None
        asked = [i for i in pending if keys[i] is not None]
        if not asked or self.model_version is None:
            return pending
        try:
            hits = self._cache.get_many([keys[i] or "" for i in asked], self.model_version)
        except StoreError as exc:  # the store holding them failed: compute (counted, logged)
            self._store_failed(exc)
            return pending
        return self._write_backs(asked, pending, answers, hits)

    async def _from_write_back(self, keys: list[str | None], pending: list[int],
                               answers: list[Answer | None], features: FeatureCheck) -> list[int]:
        """Answer what the write-backs hold (read on a thread past INLINE_LOOKUP_KEYS keys when they are
        in the store); the rest are still pending."""
        assert self._cache is not None
        asked = [i for i in pending if keys[i] is not None]
        if not asked or self.model_version is None:
            return pending
        wanted = [keys[i] or "" for i in asked]
        try:
            if self._cache.reads_store and self._remote is not None:
                hits = await self._call(self._cache.get_many, wanted, self.model_version)
            elif self._cache.reads_store and len(asked) > INLINE_LOOKUP_KEYS:
                hits = await asyncio.to_thread(self._cache.get_many, wanted, self.model_version)
            else:
                hits = self._cache.get_many(wanted, self.model_version)
        except StoreError as exc:  # the store holding them failed: compute (counted, logged)
            self._store_failed(exc)
            return pending
        return self._write_backs(asked, pending, answers, hits, features)

    def _write_backs(self, asked: list[int], pending: list[int], answers: list[Answer | None],
                     hits: list[Cached | None], features: FeatureCheck | None = None) -> list[int]:
        """Fill in the answers `hits` hold (aligned with `asked`) and computed from the same features;
        count; what is still pending."""
        now = time.time()
        found = 0
        for i, hit in zip(asked, hits, strict=True):
            if hit is not None and (features is None or features.same(i, hit.features_hash)):
                # (write-backs of the served model version: its evaluator made them)
                answers[i] = Answer(hit.values, {**hit.provenance(now), "evaluator": self.evaluator})
                found += 1
        self._metrics.observe_writeback(found, len(asked) - found)
        return [i for i in pending if answers[i] is None]

    async def _compute(self, examples: list[Example], keys: list[str | None], pending: list[int],
                       answers: list[Answer | None], deadline: float | None, features: FeatureCheck) -> None:
        assert self.model_version is not None
        rows = [r for r in (examples[i].row for i in pending) if r is not None]
        computed, computed_at = await self._computed(rows, deadline, pending)
        for i, answer in zip(pending, computed, strict=True):
            answers[i] = answer
        if self._cache is not None:
            kept = [i for i in pending if keys[i] is not None and answers[i] is not None]
            items = [(keys[i] or "", answers[i].values) for i in kept]  # type: ignore[union-attr]
            hashes = [self._kept_hash(examples[i], keys[i], features, i) for i in kept]
            self._cache.put_many(items, self.model_version, computed_at, hashes)

    def _kept_hash(self, example: Example, key: str | None, features: FeatureCheck, i: int) -> bytes | None:
        """The features hash to write back with example `i`'s computed answer: the key itself when the
        key is the hash, else the hash of its features (one row hash, beside the model call)."""
        if example.key is None:
            return bytes.fromhex(key) if key is not None else None
        if example.row is None or self._row_keys is None:
            return None
        return features.digest(i) if features.hashing else self._digest(example.row)

    async def _computed(self, rows: list[Row], deadline: float | None,
                        indices: list[int] | None = None) -> tuple[list[Answer], float]:
        """The model's answers to `rows` (instances `indices` of the request, default 0..n-1), through
        the batcher, and when they were computed; UnscorableError naming the first instance the model
        refused."""
        assert self._batcher is not None and self.model_version is not None
        outcomes = await self._batcher.submit(rows, deadline)
        computed_at = time.time()
        provenance = {"source": "dynamic", "model_version": self.model_version,
                      "computed_at": iso(computed_at), "evaluator": self.evaluator}
        answers = []
        for n, outcome in enumerate(outcomes):
            if isinstance(outcome, Refused):
                i = n if indices is None else indices[n]
                raise UnscorableError(f"the model could not score instance {i}: {outcome.reason}")
            answers.append(Answer(outcome, provenance))
        return answers, computed_at

    def _not_found(self, key: str | None, index: int | None, active: VersionInfo | None) -> NotFoundError:
        """The 404 of a key nobody holds, `active` being the store's active version (`_active_quietly`);
        the message quotes at most the first characters of the key (`quoted`: a key of any length gets a
        small answer)."""
        where = f"instance {index}: key {quoted(key)}" if index is not None else f"key {quoted(key)}"
        if self.store is None and self._cache is None:
            return NotFoundError(f"{where} cannot be looked up: this server has no prediction store and no "
                                 f"write-back (dynamic mode); send the example's features")
        if self.store is None:
            return NotFoundError(f"{where} is not among the written-back predictions and the instance has no "
                                 f"features to compute it from")
        version = (f"prediction store's active version {active.version}" if active is not None
                   else "prediction store (it has no active version)")
        return NotFoundError(f"{where} was never precomputed: it is not in the {version} "
                             f"(or its TTL has passed)"
                             + ("" if self.model is None else "; send the example's features to compute it"))

    def _unusable(self, hit: StoredPrediction, index: int | None) -> NotFoundError:
        where = f"instance {index}: " if index is not None else ""
        assert self._outputs is not None
        if hit.values.keys() != self._outputs:
            why = (f"its columns {', '.join(hit.values)} are not the served model's outputs "
                   f"{', '.join(sorted(self._outputs))}")
        else:
            why = f"it was made by model version {hit.model_version}, not {self.model_version}"
        return NotFoundError(f"{where}key {quoted(hit.key)} is in store version {hit.store_version} but "
                             f"cannot be served: {why}; send the example's features to compute it")

    def active_version(self) -> float:
        """The active store version's number (NaN if none), for the metrics."""
        active = self.store.active() if self.store is not None else None
        return float(active.version) if active is not None else float("nan")

    def active_age_s(self) -> float:
        """Seconds since the active store version was published (NaN if none), for the metrics."""
        active = self.store.active() if self.store is not None else None
        return time.time() - active.created_at if active is not None else float("nan")
