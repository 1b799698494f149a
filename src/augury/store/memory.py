"""The in-process prediction store: dicts behind the store contract.

A product feature (a store for tests, demos and single-process serving, `memory://` or `memory://name`
to share one store by name inside the process) and the test double for code that takes a store.

Rows are kept as the same MessagePack records SQLite stores (`codec`): the semantics cannot drift from
the other backends, a million rows take about 100 MB instead of 300, and bytes are invisible to Python's
cyclic garbage collector, whose full passes over millions of tuples otherwise show up as millisecond
stalls in lookup latency (`benchmarks/store_bench.py`).

Thread-safety: writers (publish bookkeeping, activate, rollback, delete, gc) hold one lock; readers take
none. A version's rows live in a dict that is complete before the version becomes visible as ready and
is never changed afterwards, and the active version is one attribute that is replaced in one step, so a
`get_many` reads the old version or the new one, never a mix. A failed publish removes its partial
version before raising; nothing here can outlive its process, so this backend never has orphans.

A publish can also be taken in parts (`base.Publishing`): `begin_publish` returns a handle whose
`write`s (and those of handles from `join_publish`, from other threads) fill the version, then `commit`
or `abort`; `publish` is one such handle.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from augury.errors import InputError, StoreError
from augury.store import versions as vs
from augury.store.base import LOADING, READY, StoredPrediction, VersionInfo, WrittenBack
from augury.store.codec import (
    View,
    batch_rows,
    decode_record,
    dump_json,
    encode_record,
    features_hashed,
    load_json,
    prediction_columns,
    to_prediction,
)
from augury.store.publishing import check_publish_args, iter_batches
from augury.store.writeback import checked

_NAMED: dict[str, MemoryStore] = {}
_NAMED_LOCK = threading.Lock()


#: the most write-backs a memory store keeps (it lives in one process's memory).
MAX_WRITTEN_BACK = 100_000


def named_memory_store(name: str) -> MemoryStore:
    """The process-wide memory store called `name`, created on first use (`memory://name`)."""
    with _NAMED_LOCK:
        store = _NAMED.get(name)
        if store is None:
            store = _NAMED[name] = MemoryStore(f"memory://{name}")
        return store


@dataclass
class _Version:
    number: int
    model_version: str
    created_at: float
    columns: tuple[str, ...]
    ttl_s: float | None
    profile_json: str
    meta_json: str
    hashed: bool = False
    state: str = LOADING
    rows: dict[str, bytes] = field(default_factory=dict)
    #: whether a first written batch fixed `columns` and `hashed`
    columns_fixed: bool = False

    def view(self) -> View:
        return View(str(self.number), self.model_version, self.columns, self.ttl_s, self.hashed)


@dataclass(frozen=True)
class _Active:
    version: _Version
    view: View


class MemoryStore:
    """A versioned key -> prediction store held in this process's memory."""

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._lock = threading.Lock()
        self._next = 1
        self._versions: dict[int, _Version] = {}
        self._active: _Active | None = None
        self._written: OrderedDict[tuple[str, str], WrittenBack] = OrderedDict()

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """Look up `keys` in the active version; results aligned with `keys`, `None` for a miss."""
        active = self._active
        if active is None:
            return [None] * len(keys)
        rows, view = active.version.rows, active.view
        cutoff = view.cutoff_us(time.time())
        out: list[StoredPrediction | None] = []
        for key in keys:
            blob = rows.get(key)
            out.append(None if blob is None else to_prediction(key, decode_record(blob), view, cutoff))
        return out

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
        """Write a new version from `batches`, mark it ready, and activate it unless `activate` is False."""
        handle = self.begin_publish(model_version=model_version, ttl_s=ttl_s, profile=profile, meta=meta)
        try:
            for batch in iter_batches(batches):
                handle.write(batch)
            handle.commit(activate)
        except BaseException:
            handle.abort()
            raise
        with self._lock:
            return self._info(self._versions[int(handle.version)])

    def begin_publish(self, *, model_version: str, ttl_s: float | None = None,
                      profile: dict[str, Any] | None = None,
                      meta: dict[str, Any] | None = None) -> MemoryPublish:
        """Start a publish: a new 'loading' version and the handle that writes and commits it."""
        check_publish_args(model_version, ttl_s)
        profile_json, meta_json = dump_json(profile, "profile"), dump_json(meta, "meta")
        with self._lock:
            version = _Version(self._next, model_version, time.time(), (), ttl_s, profile_json, meta_json)
            self._versions[version.number] = version
            self._next += 1
        return MemoryPublish(self, version, owner=True)

    def join_publish(self, version: str) -> MemoryPublish:
        """A handle that writes parts of a publish begun elsewhere (it cannot commit or abort)."""
        with self._lock:
            info = vs.find(self._infos(), version)
            if info.state != LOADING:
                raise StoreError(f"store version {version} is {info.state}, not being published")
            return MemoryPublish(self, self._versions[int(info.version)], owner=False)

    def activate(self, version: str) -> VersionInfo:
        """Make a ready version the active one, atomically."""
        with self._lock:
            info = vs.find(self._infos(), version)
            vs.check_activatable(info)
            return self._switch(int(info.version))

    def active(self) -> VersionInfo | None:
        """The active version, or None before the first publish."""
        active = self._active
        return None if active is None else self._info(active.version)

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first."""
        with self._lock:
            return self._infos()

    def rollback(self, to: str | None = None) -> VersionInfo:
        """Activate `to`, or the newest ready version older than the active one."""
        with self._lock:
            return self._switch(int(vs.rollback_target(self._infos(), to).version))

    def delete(self, version: str) -> None:
        """Delete a version that is neither active nor being written."""
        with self._lock:
            info = vs.find(self._infos(), version)
            vs.check_deletable(info)
            del self._versions[int(info.version)]

    def gc(self, keep: int = 2) -> list[str]:
        """Delete all but the newest `keep` ready versions (never the active one), and the expired
        write-backs; returns the deleted versions."""
        with self._lock:
            victims = vs.gc_victims(self._infos(), keep)
            for victim in victims:
                del self._versions[int(victim)]
        self.prune_written_back()
        return victims

    def write_back(self, rows: Sequence[WrittenBack]) -> None:
        """Keep dynamic predictions beside the versions, each until its `expires_at` (at most
        MAX_WRITTEN_BACK of them: the oldest written go first)."""
        rows = checked(rows)
        with self._lock:
            written = self._written
            for row in rows:
                written[(row.key, row.model_version)] = row
                written.move_to_end((row.key, row.model_version))
            while len(written) > MAX_WRITTEN_BACK:
                written.popitem(last=False)

    def written_back(self, keys: Sequence[str], model_version: str) -> list[WrittenBack | None]:
        """The unexpired write-backs of `keys` made by `model_version`, aligned with `keys` (copies)."""
        now = time.time()
        out: list[WrittenBack | None] = []
        for key in keys:
            row = self._written.get((key, model_version))
            out.append(None if row is None or row.expires_at <= now else
                       WrittenBack(key, dict(row.values), model_version, row.computed_at, row.expires_at,
                                   row.features_hash))
        return out

    def prune_written_back(self) -> int:
        """Delete the expired write-backs; how many."""
        now = time.time()
        with self._lock:
            expired = [at for at, row in self._written.items() if row.expires_at <= now]
            for at in expired:
                del self._written[at]
        return len(expired)

    def close(self) -> None:
        """Nothing to release: the data stays for other users of a named store until the process ends."""

    def _switch(self, number: int) -> VersionInfo:
        version = self._versions[number]
        self._active = _Active(version, version.view())
        return self._info(version)

    def _infos(self) -> list[VersionInfo]:
        return [self._info(v) for v in sorted(self._versions.values(), key=lambda v: v.number)]

    def _info(self, v: _Version) -> VersionInfo:
        active = self._active
        return VersionInfo(
            version=str(v.number),
            model_version=v.model_version,
            created_at=v.created_at,
            row_count=len(v.rows),
            columns=v.columns,
            state=v.state,
            active=active is not None and active.version is v,
            ttl_s=v.ttl_s,
            profile=load_json(v.profile_json),
            meta=load_json(v.meta_json),
            features_hash=v.hashed,
        )


class MemoryPublish:
    """One publish in progress into a memory store (`base.PublishHandle`). Rows go into a dict of the
    handle's version that no reader looks at until `commit` marks it ready; a key written twice, by this
    handle or a joined one, is an InputError."""

    def __init__(self, store: MemoryStore, version: _Version, *, owner: bool) -> None:
        self._store, self._version, self._owner = store, version, owner
        self.version = str(version.number)

    def write(self, batch: pa.RecordBatch) -> int:
        """Store one batch's rows; how many."""
        v = self._version
        with self._store._lock:
            if v.state != LOADING or self._store._versions.get(v.number) is not v:
                raise StoreError(f"store version {self.version}: this publish is already over")
            if not v.columns_fixed:  # the first batch any writer wrote fixes them
                v.columns, v.hashed, v.columns_fixed = (prediction_columns(batch.schema),
                                                        features_hashed(batch.schema), True)
            columns, hashed = v.columns, v.hashed
        r = batch_rows(batch, columns, v.model_version, hashed)
        chunk = dict(zip(r.keys, map(encode_record, r.records()), strict=True))
        if len(chunk) != len(r.keys):
            key, _ = Counter(r.keys).most_common(1)[0]
            raise InputError(f"key '{key}' appears more than once in the published rows")
        with self._store._lock:
            clash = v.rows.keys() & chunk.keys() if v.rows else set()
            if clash:
                raise InputError(f"key '{min(clash)}' appears more than once in the published rows")
            v.rows.update(chunk)
        return len(chunk)

    def commit(self, activate: bool = True) -> str:
        """Mark the version ready and, if `activate`, make it the active one (one attribute)."""
        self._check_owner("commit")
        store, v = self._store, self._version
        with store._lock:
            if v.state != LOADING or store._versions.get(v.number) is not v:
                raise StoreError(f"store version {self.version}: this publish is already over")
            v.state = READY
            if activate:
                store._active = _Active(v, v.view())
        return self.version

    def abort(self) -> None:
        """Delete the partial version."""
        self._check_owner("abort")
        with self._store._lock:
            if self._version.state == LOADING:
                self._store._versions.pop(self._version.number, None)

    def _check_owner(self, doing: str) -> None:
        if not self._owner:
            raise StoreError(f"store version {self.version}: only the handle that began a publish may "
                             f"{doing} it")
