"""Reading a Redis store: version records, and lookups that cost one round trip.

A lookup must not read the active pointer first (a second round trip per request), so a `Reader` keeps
the active version in memory and reads only its keys: one GET for one key, one MGET per `CHUNK` keys, all
chunks in one pipeline (one round trip). The pointer it keeps is brought up to date three ways: at once by
this process's own switches; by a pub/sub message that every switch publishes (`Keys.channel`,
published inside the same script that moves the pointer), so every server of a fleet follows a publish
within a network hop; and by re-reading the pointer every `poll_s` (1 s), which covers a message lost to
a dropped connection and a Redis that restarted empty. A message only triggers that read (it is never
trusted for the number), so messages arriving late cannot move a reader back.

A server awaits its lookups on its event loop (`aget_many`): the same round trip over a `redis.asyncio`
client with its own pool (same bound and timeouts, made on the loop that first uses it), the same
decoding (`_decoded`) and the same error translation; only the pointer is kept by the thread above.

The pointer only ever names a complete (ready) version and versions never change, so a lookup reads
the old version or the new one, never a mix (invariant 5). A version deleted while a server still takes
it as active (for at most the notification delay) reads as misses: gc never deletes the active version,
and keeps the newest `keep` others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from augury.errors import StoreBroken, StoreError
from augury.store.base import LOADING, ORPHAN, READY, StoredPrediction, VersionInfo
from augury.store.codec import View, decode_record, to_prediction
from augury.store.redis_conn import Keys, Options, connect_async, translated

log = logging.getLogger(__name__)

#: how often the watcher thread looks whether the store was closed (between pub/sub reads).
WAKE_S = 0.25
#: the most keys one MGET reads (several chunks go in one pipeline: one round trip).
CHUNK = 256

#: the active version's number and record, read atomically in one round trip.
ACTIVE_LUA = """
local n = redis.call('GET', KEYS[1])
if not n then return false end
return {n, redis.call('HGETALL', ARGV[1] .. ':meta:' .. n)}
"""


def info_from(number: str, fields: dict[bytes, bytes], *, active: bool, leased: bool) -> VersionInfo:
    """A version's record (its meta hash) as a VersionInfo; StoreError if it is not one."""
    try:
        f = {k.decode(): v.decode() for k, v in fields.items()}
        state = f["state"]
        if state == "loading":
            state = LOADING if leased else ORPHAN
        elif state != "ready":
            state = ORPHAN  # ('deleting': a delete that was interrupted; gc finishes it)
        else:
            state = READY
        return VersionInfo(
            version=number, model_version=f["model_version"], created_at=float(f["created_at"]),
            row_count=int(f.get("rows", "0")), columns=tuple(json.loads(f.get("columns", "[]"))),
            state=state, active=active, ttl_s=float(f["ttl_s"]) if f.get("ttl_s") else None,
            profile=json.loads(f.get("profile", "{}")), meta=json.loads(f.get("meta", "{}")),
            features_hash=f.get("hashed") == "1")
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise StoreBroken(f"the record of store version {number} is corrupt: {exc!r}") from exc


@dataclass(frozen=True)
class Current:
    """The active version as a reader knows it."""

    info: VersionInfo
    view: View
    namespace: str


_UNKNOWN = object()


class Reader:
    """Lookups in the active version, which it keeps current (see the module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys, opts: Options, url: str,
                 connect_url: str | None = None) -> None:
        self._client, self._keys, self._opts, self.url = client, keys, opts, url
        #: what `aget_many` connects to (None: this reader has only the blocking client)
        self._connect_url = connect_url
        #: the asyncio client, its loop and the task that closes it, made on the first `aget_many`
        self._async: tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis, asyncio.Task[None]] | None = None
        self._active_script = client.register_script(ACTIVE_LUA)
        self._current: Any = _UNKNOWN  # Current | None once read
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher: threading.Thread | None = None

    def active(self) -> VersionInfo | None:
        """The active version, read now (and kept)."""
        current = self.refresh()
        return None if current is None else current.info

    def refresh(self) -> Current | None:
        """Read the pointer and the active version's record (one round trip) and keep them."""
        with self._lock, translated(self.url, "reading the active version"):
            found = self._active_script(keys=[self._keys.pointer], args=[self._keys.prefix])
            if not found:
                self._current = None
                return None
            number = bytes(found[0]).decode()
            record = found[1]
            fields = dict(zip(record[::2], record[1::2], strict=True))
            if not fields:
                raise StoreBroken(f"prediction store {self.url}: the active version {number} has no record")
            info = info_from(number, fields, active=True, leased=False)
            current = self._current
            if not (isinstance(current, Current) and current.info == info):
                view = View(number, info.model_version, info.columns, info.ttl_s, info.features_hash)
                self._current = current = Current(info, view, self._keys.namespace(number))
            return current

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """Look up `keys` in the active version: one round trip (see the module docstring)."""
        if not keys:
            return []
        if self._watcher is None:  # the first lookup (`active` may have read the pointer long before)
            self._watch()
            current = self.refresh()
        else:
            current = self._current
            if current is _UNKNOWN:  # (no read has succeeded yet)
                current = self.refresh()
        if current is None:
            return [None] * len(keys)
        assert isinstance(current, Current)
        with translated(self.url, "lookup"):
            found, how = _read(self._client, current.namespace, keys)
            return _decoded(keys, _blobs(found, how), current.view)

    async def aget_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """`get_many` awaited on the running event loop, over `redis.asyncio` (its own pool, made on this
        loop on first use): the same keys, the same round trip, the same decoding and errors, without a
        thread hop. Before the active version was first read (the first lookup, or while Redis has never
        answered) it runs `get_many` on a thread instead: that read is blocking, and rare."""
        if not keys:
            return []
        current = self._current
        if self._watcher is None or current is _UNKNOWN:
            return await asyncio.to_thread(self.get_many, keys)
        if current is None:
            return [None] * len(keys)
        assert isinstance(current, Current)
        client = self._async_client()
        with translated(self.url, "lookup"):
            found, how = _read(client, current.namespace, keys)
            return _decoded(keys, _blobs(await found, how), current.view)

    def _async_client(self) -> redis.asyncio.Redis:
        """The asyncio client of the running loop (a new one if the loop changed: its connections are
        bound to the loop that opened them), owned by a task of that loop which closes it when cancelled:
        by `close`, or by the loop's runner as the loop ends (a server's store may outlive its loop)."""
        loop = asyncio.get_running_loop()
        made = self._async
        if made is None or made[0] is not loop:
            if self._connect_url is None:
                raise StoreBroken(f"prediction store {self.url}: this reader cannot read asynchronously")
            client = connect_async(self._connect_url, self._opts)
            owner = loop.create_task(_own(client), name="augury-redis-async-client")
            made = self._async = (loop, client, owner)
        return made[1]

    async def aclose(self) -> None:
        """Close the asyncio client's connections (on the loop that uses them)."""
        made, self._async = self._async, None
        if made is not None:
            made[2].cancel()
            await asyncio.gather(made[2], return_exceptions=True)

    def _watch(self) -> None:
        """Start the thread that keeps the pointer current (once, on the first lookup)."""
        with self._lock:
            if self._watcher is not None or self._closed.is_set():
                return
            self._watcher = threading.Thread(target=self._follow, name="augury-redis-watch", daemon=True)
            self._watcher.start()

    def _follow(self) -> None:
        pubsub = None
        failing = False
        last = time.monotonic()
        while not self._closed.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self._keys.channel)
                    self.refresh()  # (switches made while not subscribed)
                    last = time.monotonic()
                message = pubsub.get_message(timeout=min(WAKE_S, self._opts.poll_s))
                if message is not None or time.monotonic() - last >= self._opts.poll_s:
                    self.refresh()
                    last = time.monotonic()
                if failing:
                    log.info("prediction store %s: following the active version again", self.url)
                failing = False
            except (redis.RedisError, StoreError) as exc:
                if not failing:
                    log.warning("prediction store %s: cannot follow the active version (retrying every "
                                "%g s): %s", self.url, min(self._opts.poll_s, 1.0), exc)
                failing = True
                if pubsub is not None:
                    _close_quietly(pubsub)
                    pubsub = None
                self._closed.wait(min(self._opts.poll_s, 1.0))
        if pubsub is not None:
            _close_quietly(pubsub)

    def close(self) -> None:
        """Stop following the active version; close the asyncio client (on its loop, if it still runs)."""
        self._closed.set()
        made, self._async = self._async, None
        if made is not None and not made[0].is_closed():
            loop, _, owner = made
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:  # (a server closes its store on its loop, as it shuts down)
                owner.cancel()
            else:
                with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile, and its connections)
                    loop.call_soon_threadsafe(owner.cancel)
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(WAKE_S + self._opts.socket_timeout_s + 1)


#: how `_read`'s result holds the records: one record, a list of them, a list of lists (one per chunk)
ONE, FLAT, CHUNKED = "one", "flat", "chunked"


def _read(client: Any, namespace: str, keys: Sequence[str]) -> tuple[Any, str]:
    """The one round trip that reads `keys` in `namespace` through `client`, a client of either kind: one
    GET, one MGET of up to `CHUNK` keys, or a pipeline of MGETs. Returns its result (an awaitable from an
    asyncio client) and how that holds the records (`_blobs`)."""
    if len(keys) == 1:
        return client.get(namespace + keys[0]), ONE
    if len(keys) <= CHUNK:
        return client.mget([namespace + k for k in keys]), FLAT
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(keys), CHUNK):
        pipe.mget([namespace + k for k in keys[start:start + CHUNK]])
    return pipe.execute(), CHUNKED


def _blobs(found: Any, how: str) -> list[Any]:
    """The records of a `_read`, in key order."""
    if how == ONE:
        return [found]
    if how == FLAT:
        return list(found)
    return [b for chunk in found for b in chunk]


def _decoded(keys: Sequence[str], blobs: list[Any], view: View) -> list[StoredPrediction | None]:
    """The records read for `keys` (None where missing) as predictions of `view` (expired ones None)."""
    cutoff = view.cutoff_us(time.time())
    return [None if b is None else to_prediction(k, decode_record(b), view, cutoff)
            for k, b in zip(keys, blobs, strict=True)]


async def _own(client: redis.asyncio.Redis) -> None:
    """Hold `client` until cancelled, then close its connections."""
    try:
        await asyncio.Event().wait()
    finally:
        await client.aclose()


def _close_quietly(pubsub: Any) -> None:
    try:
        pubsub.close()
    except (redis.RedisError, OSError) as exc:
        log.debug("closing a pub/sub connection: %s", exc)
