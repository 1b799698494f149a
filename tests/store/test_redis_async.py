"""`RedisStore.aget_many`, the lookup a server awaits on its event loop: the same answers and the same
errors as `get_many`, on a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pyarrow as pa
import pytest
import redis

from augury.errors import StoreBroken, StoreUnavailable
from augury.store import StoredPrediction
from augury.store.redis_read import CHUNK
from augury.store.redis_store import RedisStore
from redis_server import RedisServer

BatchOf = Callable[..., pa.RecordBatch]


def test_aget_many_answers_as_get_many(redis_url: str, batch_of: BatchOf) -> None:
    store = RedisStore(redis_url)
    try:
        keys = [f"k{i}" for i in range(CHUNK + 50)]  # (more than one chunk: a pipeline of MGETs)
        store.publish([batch_of(keys)], model_version="m")
        asked = [[], ["k3"], ["k1", "nope", "k2"], [*keys, "nope"]]

        async def main() -> list[list[StoredPrediction | None]]:
            try:
                return [await store.aget_many(ks) for ks in asked] + [await store.aget_many(["k3"])]
            finally:
                await store.reader.aclose()

        got = asyncio.run(main())
        assert got == [store.get_many(ks) for ks in asked] + [store.get_many(["k3"])]
        assert got[2][1] is None and got[3][-1] is None and got[1][0] is not None
    finally:
        store.close()


def test_aget_many_errors_are_translated(redis_server: RedisServer, redis_url: str,
                                         batch_of: BatchOf) -> None:
    """A corrupt record is StoreBroken; a stopped Redis is StoreUnavailable at once (not a hang), and the
    same store answers again once it is back, on the same loop."""
    store = RedisStore(redis_url, poll_s=0.2, socket_timeout_s=0.5, connect_timeout_s=0.5)
    raw = redis.Redis.from_url(redis_url)
    try:
        store.publish([batch_of(["a", "b"])], model_version="m1")
        store.get_many(["a"])  # (the active version is known from here on)
        raw.set("augury:v:1:b", b"\xc1 not msgpack")

        async def main() -> None:
            try:
                assert (await store.aget_many(["a"]))[0] is not None
                with pytest.raises(StoreBroken, match="corrupt record"):
                    await store.aget_many(["a", "b"])
                redis_server.stop()
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match="cannot be reached"):
                    await store.aget_many(["a"])
                assert time.monotonic() - started < 5
                redis_server.start()
                await asyncio.to_thread(store.publish, [batch_of(["c"])], model_version="m2")
                deadline = time.monotonic() + 5
                while True:
                    try:
                        found = await store.aget_many(["a", "c"])
                        if found[0] is None and found[1] is not None:
                            break
                    except StoreUnavailable:
                        pass
                    assert time.monotonic() < deadline, "no recovery"
                    await asyncio.sleep(0.05)
            finally:
                await store.reader.aclose()

        asyncio.run(main())
    finally:
        raw.close()
        store.close()
        if redis_server.proc is None:
            redis_server.start()
