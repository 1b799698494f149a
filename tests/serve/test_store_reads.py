"""Coalesced lookups of a networked store (`serve.store_reads`), over a memory store that counts its calls
and can be told to fail (a fake, as the memory store is meant to be)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from augury.errors import StoreUnavailable
from augury.serve import store_reads
from augury.serve.store_reads import StoreReads
from augury.store import MemoryStore, StoredPrediction

from .helpers import publish_values


class SlowStore(MemoryStore):
    """A memory store whose lookups take `delay_s`, are counted, and fail while `down` is set."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.down = threading.Event()

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        self.calls.append(len(keys))
        time.sleep(self.delay_s)
        if self.down.is_set():
            raise StoreUnavailable("the store is down")
        return super().get_many(keys)


def values(found: Sequence[StoredPrediction | None]) -> list[float | None]:
    return [None if f is None else f.values["value"] for f in found]


def test_concurrent_lookups_are_merged_and_each_gets_its_own_answers() -> None:
    store = SlowStore(delay_s=0.02)
    publish_values(store, [f"k{i}" for i in range(100)], [float(i) for i in range(100)])

    async def main() -> list[list[float | None]]:
        reads = StoreReads(store, ThreadPoolExecutor(4))
        asked = [[f"k{i}", f"k{i + 1}", "missing"] for i in range(60)]
        return [values(found) for found in await asyncio.gather(*(reads.get_many(ks) for ks in asked))]

    got = asyncio.run(main())
    assert got == [[float(i), float(i + 1), None] for i in range(60)]
    assert len(store.calls) <= 2 * store_reads.MAX_IN_FLIGHT, store.calls  # not one call per request
    assert sum(store.calls) == 180


def test_a_failed_call_fails_its_lookups_and_the_next_call_is_tried_afresh(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_reads, "BACKOFF_S", 0.0)  # (the backoff has its own test)
    store = SlowStore(delay_s=0.01)
    publish_values(store, ["a", "b"], [1.0, 2.0])

    async def main() -> None:
        reads = StoreReads(store, ThreadPoolExecutor(2))
        store.down.set()
        results = await asyncio.gather(*(reads.get_many(["a"]) for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        store.down.clear()
        assert values(await reads.get_many(["b", "a"])) == [2.0, 1.0]
        assert await reads.get_many([]) == []

    asyncio.run(main())


def test_a_call_carries_at_most_max_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_reads, "MAX_KEYS", 10)
    store = SlowStore(delay_s=0.01)
    publish_values(store, [f"k{i}" for i in range(40)], [float(i) for i in range(40)])

    async def main() -> list[list[float | None]]:
        reads = StoreReads(store, ThreadPoolExecutor(1))
        asked = [[f"k{i}" for i in range(j, j + 4)] for j in range(0, 40, 4)]
        return [values(found) for found in await asyncio.gather(*(reads.get_many(ks) for ks in asked))]

    assert [v for vs in asyncio.run(main()) for v in vs] == [float(i) for i in range(40)]
    assert max(store.calls) <= 10 and sum(store.calls) == 40


def test_after_an_unavailable_store_lookups_fail_at_once_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_reads, "BACKOFF_S", 0.3)
    store = SlowStore(delay_s=0.0)
    publish_values(store, ["a"], [1.0])

    async def main() -> None:
        reads = StoreReads(store, ThreadPoolExecutor(1))
        store.down.set()
        with pytest.raises(StoreUnavailable):
            await reads.get_many(["a"])
        calls = len(store.calls)
        store.down.clear()  # back, but not tried before the backoff has passed
        with pytest.raises(StoreUnavailable):
            await reads.get_many(["a"])
        assert len(store.calls) == calls
        await asyncio.sleep(0.35)
        assert values(await reads.get_many(["a"])) == [1.0]

    asyncio.run(main())


class AsyncStore(MemoryStore):
    """A memory store with an awaitable lookup (as Redis has), counted, failing while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.down = False

    async def aget_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        self.calls.append(len(keys))
        await asyncio.sleep(0.01)
        if self.down:
            raise StoreUnavailable("the store is down")
        return super().get_many(keys)


def test_a_store_with_an_awaitable_lookup_is_awaited_on_the_loop_and_merged() -> None:
    store = AsyncStore()
    publish_values(store, [f"k{i}" for i in range(100)], [float(i) for i in range(100)])
    executor = ThreadPoolExecutor(1)
    executor.shutdown()  # (any use of it would raise)

    async def main() -> None:
        reads = StoreReads(store, executor)
        asked = [[f"k{i}", "missing"] for i in range(60)]
        got = [values(found) for found in await asyncio.gather(*(reads.get_many(ks) for ks in asked))]
        assert got == [[float(i), None] for i in range(60)]
        assert len(store.calls) <= 2 * store_reads.MAX_IN_FLIGHT and sum(store.calls) == 120, store.calls
        store.down = True
        with pytest.raises(StoreUnavailable):
            await reads.get_many(["k1"])
        calls = len(store.calls)
        store.down = False  # back, but not tried before the backoff has passed
        with pytest.raises(StoreUnavailable):
            await reads.get_many(["k1"])
        assert len(store.calls) == calls

    asyncio.run(main())
