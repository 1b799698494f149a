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
65,536 entries take ~23 MB). Thread-safe without a lock: each step is one operation of the C
`OrderedDict`, atomic under the GIL (a lock around each cost ~0.2 µs a lookup); an entry another thread
evicts between a read and its move to the recent end simply stays evicted, and the `hits` and `misses`
counters (statistics only) may miss a count when threads race.
"""

from __future__ import annotations

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
        self.hits = 0
        self.misses = 0

    def get(self, table: str, key: str) -> Any:
        """`key`'s remembered record, `ABSENT`, or None when it is not in the cache."""
        items = self._items
        found = items.get((table, key))
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
            try:  # noqa: SIM105 (free when nothing is raised; contextlib.suppress builds an object per call)
                items.move_to_end((table, key))
            except KeyError:  # another thread evicted it meanwhile
                pass
        return found

    def put(self, table: str, key: str, record: Any) -> None:
        """Remember `key`'s decoded record (or `ABSENT`), evicting the least recently used entry."""
        if self.entries:
            items = self._items
            items[(table, key)] = record
            if len(items) > self.entries:
                try:  # noqa: SIM105 (as above)
                    items.popitem(last=False)
                except KeyError:  # another thread emptied it meanwhile
                    pass

    def get_many(self, table: str, keys: Sequence[str]) -> list[Any]:
        """For each key, its remembered record, `ABSENT`, or None when it is not in the cache."""
        if not self.entries:
            return [None] * len(keys)
        return [self.get(table, key) for key in keys]

    def put_many(self, table: str, records: Sequence[tuple[str, Any]]) -> None:
        """Remember (key, decoded record or `ABSENT`) pairs of `table`, evicting the least recently used."""
        for key, record in records:
            self.put(table, key, record)

    def clear(self) -> None:
        self._items.clear()
