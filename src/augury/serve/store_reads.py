"""Lookups in a networked store (Redis), coalesced and off the event loop.

A lookup in a networked store is a round trip, and handing it to a thread costs a thread hop besides:
measured through `augury serve` on 2 cores, one GET per request through the executor served 3,500
static requests/s against 6,500 from SQLite read on the loop (BENCHMARKS.md). Requests arrive together,
so their lookups are merged: a lookup joins the queue; while fewer than `MAX_IN_FLIGHT` store calls are
running, one is started with every key waiting (at most `MAX_KEYS`), as one `get_many` (one MGET: one
round trip) on the executor; the keys that arrive meanwhile wait for the next. So a lone request pays
one round trip as before, and under load each round trip and each thread hop serves many requests.

A store that can await its lookups on the loop (`AsyncLookups`: Redis, over `redis.asyncio`) is awaited
instead, merged the same way, and saves the thread hop and its GIL handoffs: static hits from Redis
went from 14,400 to 17,700-18,600 req/s through `augury serve` on 2 cores, 0.64 to 0.85 of SQLite's in
the same runs (BENCHMARKS.md). Stores without it keep the executor.

A failed store call fails every lookup it carried (each would have failed alike). After a store that
cannot be reached (`StoreUnavailable`), lookups fail at once with that error for `BACKOFF_S`, without a
call: a Redis that does not answer (a lost host, not a refused connection) would otherwise hold every
request for the connect timeout before a hybrid server computes it. The first lookup after that tries
the store again, so the server recovers within `BACKOFF_S` of the store.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Protocol, runtime_checkable

from augury.errors import StoreUnavailable
from augury.store import PredictionReader, StoredPrediction

#: store calls running at once (each one round trip, awaited or on a thread of the executor).
MAX_IN_FLIGHT = 4
#: the most keys one store call carries (more wait for the next; a request's own keys stay together).
MAX_KEYS = 1_024
#: how long lookups fail at once after the store could not be reached (see the module docstring).
BACKOFF_S = 0.5

Found = list[StoredPrediction | None]


@runtime_checkable
class AsyncLookups(Protocol):
    """A store that can also look keys up awaited on the event loop (Redis: `RedisStore.aget_many`)."""

    async def aget_many(self, keys: Sequence[str]) -> Found: ...


class StoreReads:
    """Coalesced `get_many` of a networked store (see the module docstring); used on the event loop."""

    def __init__(self, store: PredictionReader, executor: Executor) -> None:
        self._store = store
        self._executor = executor
        #: the store's own awaitable lookup, used instead of the executor where it has one
        self._awaited = store if isinstance(store, AsyncLookups) else None
        self._waiting: deque[tuple[Sequence[str], asyncio.Future[Found]]] = deque()
        self._in_flight = 0
        #: the last StoreUnavailable and until when (monotonic) lookups fail with it at once
        self._down: tuple[StoreUnavailable, float] | None = None

    async def get_many(self, keys: Sequence[str]) -> Found:
        """The store's `get_many(keys)`, merged with the lookups of other requests waiting now."""
        if not keys:
            return []
        down = self._down
        if down is not None:
            if time.monotonic() < down[1]:
                raise down[0]
            self._down = None  # (try the store again)
        future: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, future))
        if self._in_flight < MAX_IN_FLIGHT:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        """Store calls, one after another, while lookups are waiting."""
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                taken = [self._waiting.popleft()]
                size = len(taken[0][0])
                while self._waiting and size + len(self._waiting[0][0]) <= MAX_KEYS:
                    item = self._waiting.popleft()
                    taken.append(item)
                    size += len(item[0])
                keys = [k for ks, _ in taken for k in ks]
                try:
                    if self._awaited is not None:
                        found = await self._awaited.aget_many(keys)
                    else:
                        found = await loop.run_in_executor(self._executor, self._store.get_many, keys)
                except Exception as exc:  # (a StoreError, usually): every lookup it carried fails alike
                    if isinstance(exc, StoreUnavailable):
                        self._down = (exc, time.monotonic() + BACKOFF_S)
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for ks, future in taken:
                    if not future.done():  # (its request may have been cancelled)
                        future.set_result(found[start:start + len(ks)])
                    start += len(ks)
        finally:
            self._in_flight -= 1
