"""Answers to ``GET /v1/models/{name}/predictions/{key}`` kept encoded, for the store version they came from.

Why: a static lookup's own work is mostly not the store's. Through the server (in process,
`benchmarks/inproc_bench.py static`), a request cost ~33 µs of CPU against ~18 µs for the same server
answering one constant: the store's read (a reader from the pool, its snapshot check, the record cache or
a SELECT, the MessagePack record decoded), the `StoredPrediction`, the `Answer` and its provenance, and
the JSON encoding each take 1-4 µs, and under load each touches memory the network has pushed out of the
caches. A stored prediction never changes within a version (DESIGN.md: versions are immutable), so the
encoded answer of a key can be kept and reused while its version is the one lookups answer from; only
the age changes, and it is written in at each answer.

**What is kept.** For each key answered from the store (a usable static answer), the JSON of its
prediction and, shared by every key of the same version and computation time, the encoded provenance
cut around its ``age_s`` value (`Provenance`): an answer is the key, the prediction, the provenance's
head, the age and its tail, joined. Before a key is kept, the joined answer is compared with the one the
normal path encoded for the same request; a key whose answer differs is not kept (so the two paths
answer the same bytes by construction, not by a parallel encoder).

**Versions.** An entry holds only for the version it was read from. The memo follows the store as a
lookup would: the store's `reads_stamp` (a write or a switch through this process, a reopened file)
is compared on every answer, and at most `snapshot_s` after its last check it asks the store which
version a lookup would answer from now (`lookup_view`, through a snapshot renewed for the question),
so a switch made by another process is seen as late as the store's own lookups see it, no later; a new
version empties the memo. A store that cannot say (a file being reopened) empties it too: the lookup
then goes to the store, which answers or fails as without a memo. A version with a TTL is not kept
(its records expire at each read). An answer computed under another version than the memo's (a lookup
racing a switch) is not kept either.

**Bounds.** At most `max_bytes` of entries (estimated: the prediction's JSON and the key, plus a fixed
overhead per entry, `ENTRY_OVERHEAD`); once full, new keys are simply not kept until the next version,
so a skewed traffic's head, which comes first, stays. Only an in-process store that can say which
version its lookups answer from (SQLite) is memoised; a networked one is not (its lookups are round
trips that another process's switch must reach at once).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, runtime_checkable

from augury.errors import StoreError
from augury.serve.answers import Answer, age_s
from augury.serve.wire import dump_json, parse_json
from augury.store.codec import View

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)

#: bytes an entry costs besides its prediction's JSON and its key (measured: the dict slot, the tuple,
#: the bytes object's header, the key string's header), so the budget holds roughly in RSS.
ENTRY_OVERHEAD = 200


@runtime_checkable
class FollowsVersions(Protocol):
    """A store whose lookups answer from one version at a time and can say which (`SQLiteStore`)."""

    @property
    def snapshot_s(self) -> float: ...

    def reads_stamp(self) -> object: ...

    def lookup_view(self) -> View | None: ...


class Provenance(NamedTuple):
    """The encoded provenance of a version's answers computed at one time, cut around the age."""

    #: ``,"provenance":{...,"age_s":`` (the answer's JSON up to its age)
    head: bytes
    #: what follows the age, the answer's closing brace included
    tail: bytes
    computed_at: float
    #: the provenance headers of such an answer
    headers: tuple[tuple[bytes, bytes], ...]


class Entry(NamedTuple):
    prediction: bytes
    provenance: Provenance


class LookupMemo:
    """Encoded static answers by key, for the version lookups answer from now (see the module docstring).
    Used on the event loop only."""

    def __init__(self, store: FollowsVersions, max_bytes: int) -> None:
        self._store = store
        self.max_bytes = max_bytes
        self._period = store.snapshot_s
        self._entries: dict[str, Entry] = {}
        #: by computed_at, evaluator and headers (what, within a version, tells provenances apart)
        self._provenances: dict[tuple[Any, Any, tuple[tuple[bytes, bytes], ...]], Provenance] = {}
        self.bytes = 0
        #: the version the entries are of (None: none kept, e.g. a version with a TTL)
        self.version: str | None = None
        self._stamp: object = None
        #: when (time.monotonic()) the version must be asked again
        self._due = -1.0

    @staticmethod
    def usable(store: object) -> bool:
        """Whether `store` can be memoised: it follows versions and keeps read snapshots."""
        return isinstance(store, FollowsVersions) and store.snapshot_s > 0

    def get(self, key: str) -> Entry | None:
        """`key`'s kept answer for the version a lookup would answer from now, or None."""
        if not self._entries or not self._current():  # (which may empty it)
            return None
        return self._entries.get(key)

    def keep(self, key: str, answer: Answer, body: bytes, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Keep `key`'s answer, which the normal path encoded as `body` with `headers`, if it is a static
        answer of the version lookups answer from now and there is room."""
        p = answer.provenance
        if p.get("source") != "static":
            return
        if not self._current():
            return
        if p.get("store_version") != self.version or key in self._entries:
            return
        prediction = memoryview(dump_json(answer.values)).tobytes()  # (orjson's bytes hold 4 KiB: a copy)
        size = len(prediction) + len(key) + ENTRY_OVERHEAD
        if self.bytes + size > self.max_bytes:
            return
        provenance = self._provenance(p, tuple(headers))
        if provenance is None or _join(key, prediction, provenance, p["age_s"]) != body:
            return  # (an answer this memo would not write byte for byte: never kept)
        self._entries[key] = Entry(prediction, provenance)
        self.bytes += size

    def _current(self) -> bool:
        """Whether the entries are of the version lookups answer from now: the store is asked when its
        stamp moved or `snapshot_s` passed, and the memo emptied if the version moved. False, with the
        memo emptied, when the store cannot say (the lookup itself then meets the same failure, or
        answers from another reader: keeping nothing is always safe)."""
        stamp = self._store.reads_stamp()
        if stamp == self._stamp and time.monotonic() < self._due:
            return True
        try:
            view = self._store.lookup_view()
        except StoreError:
            self._empty(None)
            self._due = -1.0
            return False
        version = view.store_version if view is not None and view.ttl_s is None else None  # (TTL: none kept)
        if version != self.version:
            self._empty(version)
        self._stamp = stamp
        self._due = time.monotonic() + self._period
        return True

    def _empty(self, version: str | None) -> None:
        """Forget every entry; what is kept from now on is of `version`."""
        self._entries, self._provenances, self.bytes, self.version = {}, {}, 0, version

    def _provenance(self, p: Any, headers: tuple[tuple[bytes, bytes], ...]) -> Provenance | None:
        """The shared `Provenance` of answers with provenance `p` and `headers` (None: not one to keep)."""
        computed = p.get("computed_at")
        mark = (computed, p.get("evaluator"), headers)
        found = self._provenances.get(mark)
        if found is not None:
            return found
        computed_at = unix_of(computed)
        encoded = dump_json({**p, "age_s": 0.0})
        at = encoded.rfind(b',"age_s":0.0,')
        if computed_at is None or at < 0:
            return None
        head, tail = encoded[:at + 9], encoded[at + 12:]  # (around the 0.0)
        made = Provenance(b',"provenance":' + head, tail + b"}", computed_at, headers)
        self._provenances[mark] = made
        return made


def unix_of(text: object) -> float | None:
    """The unix time an answer's ``computed_at`` (`store.base.iso`) stands for, as the store holds it
    (whole microseconds over 1e6, so the age comes out as the normal path's); None if it is not one."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    try:
        at = datetime.fromisoformat(text[:-1] + "+00:00")
    except ValueError:
        return None
    return ((at - EPOCH) // MICROSECOND) / 1e6


def answer_body(key: str, entry: Entry, now: float) -> bytes:
    """The JSON of `key`'s kept answer at `now` (unix seconds): as the normal path writes it."""
    provenance = entry.provenance
    return _join(key, entry.prediction, provenance, age_s(now, provenance.computed_at))


def _join(key: str, prediction: bytes, provenance: Provenance, age: float) -> bytes:
    return b"".join((b'{"key":', dump_json(key), b',"prediction":', prediction, provenance.head,
                     dump_json(age), provenance.tail))


def decoded(body: bytes) -> Answer:
    """The `Answer` a kept answer's JSON stands for (for the monitor, when it samples one)."""
    found = parse_json(body)
    return Answer(found["prediction"], found["provenance"])
