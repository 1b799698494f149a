"""Write-back of dynamic predictions: an in-process cache with a TTL, in front of the model.

The prediction store's contract has no per-key write path: a version is written whole by `publish` and
never changes (DESIGN.md, invariant 5), so a dynamic prediction cannot be added to it. Write-back is
therefore a cache in the serving process: with ``--write-back-ttl``, each dynamic prediction is kept under
its key (the given key or the canonical feature hash) for that long, and a later request for the same key
is answered from it, with provenance ``source: dynamic`` (it was computed on demand), its original
``computed_at``, ``age_s`` and ``cached: true``. The TTL is enforced on read (an expired entry is a miss
and is dropped, never served as fresh); the cache is bounded (least recently used entries are evicted
past `max_entries`); entries are tied to the model version that made them. Each worker process has its
own cache, and a restart empties it.

Only the event loop thread touches the cache, so it needs no lock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from augury.store.base import iso


@dataclass(frozen=True, slots=True)
class Cached:
    """A dynamic prediction kept for reuse."""

    values: Mapping[str, Any]
    model_version: str
    computed_at: float

    def provenance(self, now: float) -> dict[str, Any]:
        return {
            "source": "dynamic",
            "model_version": self.model_version,
            "computed_at": iso(self.computed_at),
            "age_s": round(max(0.0, now - self.computed_at), 3),
            "cached": True,
        }


class WriteBackCache:
    """Key -> `Cached`, each entry served for at most `ttl_s` seconds after it was computed."""

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
            elif hit.computed_at < cutoff or hit.model_version != model_version:
                del entries[key]
                out.append(None)
            else:
                entries.move_to_end(key)
                out.append(hit)
        return out

    def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]], model_version: str,
                 computed_at: float) -> None:
        """Keep each (key, values) pair, evicting the least recently used entries past `max_entries`."""
        entries = self._entries
        for key, values in items:
            entries[key] = Cached(values, model_version, computed_at)
            entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
