"""A bounded cache of decoded store records, keyed by (version table, key): immutability makes it exact.

A store version never changes once published (DESIGN.md, invariant 5), so what a key holds in a given
version's table, a record or nothing, can be remembered without ever being invalidated: a new active
version is another table, hence other cache keys, and the entries of the old one age out. TTL is not
cached: it is applied to the remembered record at every read (`sqlite_read._predictions`), as to a
record just read from the file.

Why: inside a busy server a single-key SQLite lookup costs ~6 µs (measured under wrk: the B-tree pages
and SQLite's code are evicted between requests), a hit here ~0.4 µs. Traffic to a prediction store is
usually skewed towards a head of popular keys, which this keeps in memory; on uniform traffic over a
catalogue larger than the cache it helps in proportion (entries / catalogue) and costs a dict lookup per
key.

Bounded by entries, least recently used first out (an entry is ~350 bytes with a few output columns:
65,536 entries take ~23 MB). Thread-safe: one lock around each operation.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

#: what a cache entry holds for a key that the version does not have (an absent key is remembered too).
ABSENT: Any = object()


class RecordCache:
    """(table, key) -> decoded record or `ABSENT`, at most `entries` of them; `entries=0` disables it."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, table: str, key: str) -> Any:
        """`key`'s remembered record, `ABSENT`, or None when it is not in the cache."""
        with self._lock:
            found = self._items.get((table, key))
            if found is None:
                self.misses += 1
            else:
                self._items.move_to_end((table, key))
                self.hits += 1
            return found

    def put(self, table: str, key: str, record: Any) -> None:
        """Remember `key`'s decoded record (or `ABSENT`), evicting the least recently used entry."""
        if self.entries:
            with self._lock:
                self._items[(table, key)] = record
                if len(self._items) > self.entries:
                    self._items.popitem(last=False)

    def get_many(self, table: str, keys: Sequence[str]) -> list[Any]:
        """For each key, its remembered record, `ABSENT`, or None when it is not in the cache."""
        if not self.entries:
            return [None] * len(keys)
        items = self._items
        out = []
        with self._lock:
            for key in keys:
                found = items.get((table, key))
                if found is None:
                    self.misses += 1
                else:
                    items.move_to_end((table, key))
                    self.hits += 1
                out.append(found)
        return out

    def put_many(self, table: str, records: Sequence[tuple[str, Any]]) -> None:
        """Remember (key, decoded record or `ABSENT`) pairs of `table`, evicting the least recently used."""
        if not self.entries:
            return
        items = self._items
        with self._lock:
            for key, record in records:
                items[(table, key)] = record
            while len(items) > self.entries:
                items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
