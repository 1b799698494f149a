"""A bounded cache of stored records, by key and version table: immutability makes it exact.

A store version never changes once published (DESIGN.md, invariant 5), so what a key holds in a given
version's table, a record or nothing, can be remembered without ever being invalidated: each entry
holds the table it was read from, and a lookup in another table (a new active version) is a miss (and
when a reader sees the switch, the other tables' entries are dropped: `follow`). An entry is the record
as stored (its MessagePack bytes, decoded at each hit: fewer objects to keep than the decoded record,
and a caller can never change what the cache holds). TTL is not cached: it is applied at every read
(`sqlite_read`), as to a record just read from the file.

Why: inside a busy server a single-key SQLite lookup costs ~6 µs (the B-tree pages and SQLite's code
are evicted between requests), a hit on a hot entry here well under 1. Traffic to a prediction store is
usually skewed towards a head of popular keys, which this keeps in memory.

How, and what it costs where it cannot help. Measured with ``benchmarks/http_bench.py``'s workload
(static lookups by key, 100,000 keys, 65,536 entries, one server process, three runs each): on
Zipf-distributed keys (exponent 1.1) the cache serves ~33,100 requests/s against ~30,200 without it
(+9 %); on uniform keys it costs ~5 % (28,600 against 30,000), although a hit is cheaper than a miss in
a quiet process (1.7 against 4.1 µs): under load, keeping entries at all slows the rest (a cache of only
8,192 entries, 8 % of hits, costs 7 %). Two choices got it there from -8 % on uniform keys:

- first in, first out: a hit only reads (least-recently-used order moved the entry's list node, and
  touched its neighbours', on every hit: random memory writes all over the cache);
- once full, only one miss in `ADMIT_EVERY` is remembered (each admission evicts an entry: on uniform
  traffic that churn cost more than the hits saved). A hot key misses a few times before it stays; a
  cold one mostly never gets in.

Bounded by entries (~190 bytes each with a few output columns: 65,536 entries take ~13 MB).
Thread-safe without a lock: each step is one operation of the C `OrderedDict`, atomic under the GIL (a
lock around each cost ~0.2 µs a lookup); the `hits` and `misses` counters (statistics only) and the
admission turn may miss a count when threads race.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

#: what a cache entry holds for a key that the version does not have (an absent key is remembered too).
ABSENT: Any = object()

#: once the cache is full, one miss in this many is remembered (evicting the oldest entry).
ADMIT_EVERY = 8


class RecordCache:
    """(table, key) -> stored record or `ABSENT`, at most `entries` of them, oldest out first;
    `entries=0` disables it. Indexed by key alone, each entry holding its table (a key of another
    table is a miss, and its entry is replaced when this table's is put)."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        #: counts the calls to `put` on a full cache (admission).
        self._turn = 0
        #: the active version's table, as a reader last saw it switch (`follow`).
        self._table = ""

    def get(self, table: str, key: str) -> Any:
        """`key`'s remembered record in `table`, `ABSENT`, or None when it is not in the cache."""
        entry = self._items.get(key)
        if entry is None or entry[0] != table:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1]

    def put(self, table: str, key: str, record: Any) -> None:
        """Remember `key`'s record in `table` (or `ABSENT`), evicting the oldest entry; once full, only
        one call in `ADMIT_EVERY` does (the others do nothing)."""
        if self.entries:
            items = self._items
            if len(items) >= self.entries and key not in items:
                self._turn = turn = (self._turn + 1) % ADMIT_EVERY
                if turn:
                    return
            items[key] = (table, record)
            if len(items) > self.entries:
                try:  # noqa: SIM105 (free when nothing is raised; contextlib.suppress builds an object per call)
                    items.popitem(last=False)
                except KeyError:  # another thread emptied it meanwhile
                    pass

    def get_many(self, table: str, keys: Sequence[str]) -> list[Any]:
        """For each key, its remembered record, `ABSENT`, or None when it is not in the cache."""
        if not self.entries:
            return [None] * len(keys)
        return [self.get(table, key) for key in keys]

    def put_many(self, table: str, records: Sequence[tuple[str, Any]]) -> None:
        """`put` each (key, decoded record or `ABSENT`) pair of `table`."""
        for key, record in records:
            self.put(table, key, record)

    def follow(self, table: str) -> None:
        """The active version is now `table`: drop the other tables' entries, which would only take room
        (a reader still in a snapshot of another version may add some back; they age out)."""
        if table != self._table:
            self._table = table
            self._items.clear()
