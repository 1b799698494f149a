"""Write-back of dynamic predictions, so a computed example is not computed again for a while.

With ``--write-back-ttl``, each dynamic prediction is kept under its key (the given key or the canonical
feature hash) for that long, and a later request for the same key is answered from it, with provenance
``source: dynamic`` (it was computed on demand), its original ``computed_at``, ``age_s`` and ``cached:
true``. The TTL is enforced on read (an expired prediction is a miss, never served as fresh), and a kept
prediction is tied to the model version that made it, and to the hash of the features it was computed from
when the request gave a key (`keys.RowKeys`, 16 bytes; the router recomputes a key sent with other
features). Two places to keep them (``--write-back-to``):

- ``store`` (the default when the server has a store): `StoreWriteBack`, in the prediction store beside
  its versions (never in them: versions are immutable, DESIGN.md invariant 5; see `store.base`,
  "Write-back"). Every worker process and every server on that store shares them, and they outlive a
  restart. Written behind, on a thread, so a request never waits for a store write.
- ``process`` (the default without a store): `WriteBackCache`, in this process's memory: bounded (least
  recently used entries are evicted past `max_entries`), one per worker, emptied by a restart. Only the
  event loop thread touches it, so it needs no lock.
"""
from __future__ import annotations

import collections
import functools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from augury.errors import AuguryError, InputError
from augury.serve.answers import age_s
from augury.serve.errors import quoted
from augury.store import PredictionStore
from augury.store.base import WrittenBack, iso

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Cached:
    """A dynamic prediction kept for reuse."""

    values: Mapping[str, Any]
    model_version: str
    computed_at: float
    #: the canonical hash (16 bytes) of the features it was computed from; None if not kept
    features_hash: bytes | None = None

    def provenance(self, now: float) -> dict[str, Any]:
        return {
            "source": "dynamic",
            "model_version": self.model_version,
            "computed_at": iso(self.computed_at),
            "age_s": age_s(now, self.computed_at),
            "cached": True,
        }


class WriteBackCache:
    """Key -> `Cached`, each entry served for at most `ttl_s` seconds after it was computed."""

    #: reads are dict lookups (never worth a thread).
    reads_store = False

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Cached] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Sequence[str], model_version: str) -> list[Cached | None]:
        """Fresh entries made by `model_version`, aligned with `keys`; None for a miss."""
        cutoff = time.time() - self.ttl_s
        out: list[Cached | None] = []
        entries = self._entries
        for key in keys:
            hit = entries.get(key)
            if hit is None:
                out.append(None)
            elif hit.computed_at <= cutoff or hit.model_version != model_version:
                del entries[key]
                out.append(None)
            else:
                entries.move_to_end(key)
                out.append(hit)
        return out

    def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]], model_version: str,
                 computed_at: float, hashes: Sequence[bytes | None] | None = None) -> None:
        """Keep each (key, values) pair (with its features hash from `hashes`, aligned with `items`),
        evicting the least recently used entries past `max_entries`."""
        entries = self._entries
        for (key, values), digest in zip(items, hashes or [None] * len(items), strict=True):
            entries[key] = Cached(values, model_version, computed_at, digest)
            entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)


class WriteBack(Protocol):
    """Where a router keeps dynamic predictions for reuse: `WriteBackCache` (this process) or
    `StoreWriteBack` (the prediction store)."""

    ttl_s: float
    #: whether `get_many` reads a store (blocking I/O) rather than memory.
    reads_store: bool

    def get_many(self, keys: Sequence[str], model_version: str) -> list[Cached | None]: ...

    def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]], model_version: str,
                 computed_at: float, hashes: Sequence[bytes | None] | None = None) -> None: ...


#: how a written-back row fared: written to the store, dropped (the queue was full), failed (refused).
RowResult = Literal["written", "dropped", "failed"]

#: `StoreWriteBack`: rows waiting to be written at most (past it new ones are dropped and counted).
MAX_PENDING = 10_000
#: `StoreWriteBack`: the writer thread writes what is waiting this often (seconds), in one transaction...
FLUSH_S = 0.05
#: ... of at most this many rows.
FLUSH_ROWS = 2_000
#: `StoreWriteBack`: expired rows are deleted from the store this often (seconds).
PRUNE_EVERY_S = 60.0
#: a failing write is logged at most this often (every failed row is counted).
WARN_EVERY_S = 10.0


class StoreWriteBack:
    """Write-back into the prediction store, beside its versions (`store.base`, "Write-back"): shared by
    every worker process and every server on the store, and kept across restarts until each row's TTL.

    Reads are one store query for a request's keys, after the active version missed (the router makes
    it on a thread past INLINE_LOOKUP_KEYS keys, as it does the store lookup); a row older than this
    server's `ttl_s` is a miss even if another server wrote it with a longer one. Writes never hold up a
    request: `put_many` queues the rows (at most `max_pending`; past that they are dropped and counted),
    and a writer thread writes what is queued every `flush_s` in one transaction, and deletes the
    store's expired rows every `prune_every_s`. A failed write loses those rows (counted, logged at most
    every WARN_EVERY_S; a row the store refuses is retried alone, so it loses only itself): they were
    only a cache of what the model computes again. The thread survives any error, and is started again
    by `put_many` if it ever ended. `on_rows(result, n)` hears how rows fared ("written", "dropped" or
    "failed"), from whichever thread they fared on (`create_app` hands the counts to the event loop).
    """

    #: reads block on the store (the router reads many keys on a thread).
    reads_store = True

    def __init__(self, store: PredictionStore, ttl_s: float, *, max_pending: int = MAX_PENDING,
                 flush_s: float = FLUSH_S, prune_every_s: float = PRUNE_EVERY_S,
                 on_rows: Callable[[RowResult, int], None] = lambda result, n: None) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._flush_s = flush_s
        self._prune_every_s = prune_every_s
        self._on_rows = on_rows
        self._pending: collections.deque[WrittenBack] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_at = -math.inf

    def get_many(self, keys: Sequence[str], model_version: str) -> list[Cached | None]:
        """Write-backs of `model_version` from the store, aligned with `keys`: unexpired, and computed
        within this server's `ttl_s` (another server on the store may have written them with a longer
        one). StoreError if the store fails."""
        oldest = time.time() - self.ttl_s
        return [None if row is None or row.computed_at <= oldest else
                Cached(row.values, row.model_version, row.computed_at, row.features_hash)
                for row in self.store.written_back(keys, model_version)]

    def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]], model_version: str,
                 computed_at: float, hashes: Sequence[bytes | None] | None = None) -> None:
        """Queue each (key, values) pair (with its features hash from `hashes`, aligned with `items`) to
        be written, expiring `ttl_s` after `computed_at`."""
        room = self.max_pending - len(self._pending)
        expires_at = computed_at + self.ttl_s
        digests = hashes or [None] * len(items)
        for (key, values), digest in zip(items[:max(room, 0)], digests[:max(room, 0)], strict=True):
            self._pending.append(WrittenBack(key, dict(values), model_version, computed_at, expires_at,
                                             digest))
        if len(items) > room:
            self._count("dropped", len(items) - max(room, 0))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="augury-writeback", daemon=True)
            self._thread.start()
        if len(self._pending) >= FLUSH_ROWS:
            self._wake.set()

    def close(self) -> None:
        """Write what is queued (a last flush), stop the writer thread, wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._flush()
        self._stop.clear()  # an app may be served again (another lifespan): a new thread then starts

    def _run(self) -> None:
        pruned_at = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self._flush_s)
            self._wake.clear()
            self._flush()
            if time.monotonic() - pruned_at >= self._prune_every_s:
                pruned_at = time.monotonic()
                self._attempt("pruning expired write-backs", self.store.prune_written_back)

    def _flush(self) -> None:
        while self._pending:
            rows: list[WrittenBack] = []
            while self._pending and len(rows) < FLUSH_ROWS:
                rows.append(self._pending.popleft())
            failure = self._attempt(f"writing back {len(rows)} predictions",
                                    functools.partial(self.store.write_back, rows))
            if failure is InputError:  # a row the store cannot hold: the others, one by one
                written = sum(self._attempt(f"writing back the prediction of key {quoted(row.key)}",
                                            functools.partial(self.store.write_back, [row])) is None
                              for row in rows)
            else:
                written = len(rows) if failure is None else 0
            self._count("written", written)
            self._count("failed", len(rows) - written)

    def _attempt(self, doing: str, step: Callable[[], object]) -> type[Exception] | None:
        """Run `step`; None if it worked, else the class of what it raised (logged at most every
        WARN_EVERY_S; anything but an AuguryError with its traceback: a bug must not stop the thread)."""
        try:
            step()
            return None
        except Exception as exc:
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning("%s to the prediction store failed (lost: they will be computed again): %s",
                            doing, exc, exc_info=not isinstance(exc, AuguryError))
            return type(exc)

    def _count(self, result: RowResult, rows: int) -> None:
        if rows:
            try:
                self._on_rows(result, rows)
            except Exception:
                log.exception("counting written-back rows failed")
