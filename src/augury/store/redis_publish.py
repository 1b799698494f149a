"""Publishing into a Redis store through a publish handle: begin, write batches (from any number of
threads or processes), then commit or abort.

`begin` takes the next version number (INCR: never reused), records the version as 'loading' and takes
its lease, all in one script. The lease is a key with an expiry (`lease_s`) holding a random token, which
the handle's heartbeat renews every third of it; so a publish killed midway (kill -9, a lost machine) is
known by its lease having expired, with no local lock: its version then lists as an orphan and `gc`
removes it. Another process joins a publish by its version number (`RedisStore.join_publish`) to write
parts of it; only the handle that began it commits or aborts.

Each write checks its batch (`codec.batch_rows`: the columns are fixed by the first batch any writer
wrote), encodes the records and stores them with MSETNX, `WRITE_CHUNK` keys a command, every chunk of a
batch sent as soon as it is packed and the replies read after the last (packed by `redis_wire`: 3.3
times redis-py's own packing; sending each chunk as it is packed, so Redis runs one while the next is
packed, rather than all at once: 494-499k -> 624-648k rows/s for one writer, 1M rows, 2 cores).
MSETNX sets a chunk only if none of its keys exists, so a key written twice, by one writer or two, is
found without reading anything back. `commit` checks, in one script, that the version is still
'loading' and the lease still its own, marks it ready and (unless told not to) switches the pointer and
publishes the switch: atomic for every reader.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from augury.errors import InputError, StoreError
from augury.store import redis_wire
from augury.store.codec import batch_rows, encode_record, features_hashed, prediction_columns

if TYPE_CHECKING:
    from augury.store.redis_store import RedisStore

log = logging.getLogger(__name__)

#: keys per MSETNX command (a batch's chunks go in one pipeline).
WRITE_CHUNK = 1_000
#: writer processes `augury publish` loads a dataset's parts with by default (`publish_pool`): one per core,
#: 2 to 4, so that Python's packing, one writer's limit, runs on every core a publishing machine has. On
#: 2 cores shared with a local redis-server they are within noise of one: 1M rows, 624-769k rows/s with
#: one writer, 607-771k with 2, 671-827k with 3 (BENCHMARKS.md, "Publishing a dataset"). More cores not
#: measured; redis-server runs commands on one thread, which bounds any number of writers.
PUBLISH_WRITERS = max(2, min(4, os.cpu_count() or 1))

BEGIN_LUA = """
local n = redis.call('INCR', KEYS[1])
redis.call('SADD', KEYS[2], n)
redis.call('HSET', ARGV[1] .. ':meta:' .. n, 'state', 'loading', 'rows', 0, 'model_version', ARGV[4],
           'created_at', ARGV[5], 'ttl_s', ARGV[6], 'profile', ARGV[7], 'meta', ARGV[8])
redis.call('SET', ARGV[1] .. ':lease:' .. n, ARGV[2], 'PX', ARGV[3])
return n
"""
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
COMMIT_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'loading' then
  return redis.error_reply('augury: the version is no longer being published (gc took it for an orphan)')
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('augury: the publish lost its lease (not renewed for longer than lease_s)')
end
redis.call('HSETNX', KEYS[1], 'columns', '[]')
redis.call('HSETNX', KEYS[1], 'hashed', '0')
redis.call('HSET', KEYS[1], 'state', 'ready')
redis.call('DEL', KEYS[2])
if ARGV[2] == '1' then
  redis.call('SET', KEYS[3], ARGV[3])
  redis.call('PUBLISH', ARGV[4], ARGV[3])
end
return 1
"""


class RedisPublish:
    """One publish in progress (see the module docstring). Use `begin` or `RedisStore.join_publish`."""

    def __init__(self, store: RedisStore, version: str, model_version: str, token: str | None) -> None:
        self.store = store
        self.version = version
        self.model_version = model_version
        self._token = token  # None: a joined writer, which may write but not commit or abort
        self._columns: tuple[tuple[str, ...], bool] | None = None
        self._namespace = store.keys.namespace(version)
        self._done = threading.Event()
        self._heartbeat: threading.Thread | None = None
        if token is not None:
            self._heartbeat = threading.Thread(target=self._renew, name=f"augury-lease-{version}",
                                               daemon=True)
            self._heartbeat.start()

    def write(self, batch: pa.RecordBatch) -> int:
        """Store one batch's rows in the version; how many. InputError for a bad batch or a key that is
        already in the version (the publish should then be aborted)."""
        if self._done.is_set():
            raise StoreError(f"store version {self.version}: this publish is already over")
        columns, hashed = self._fix_columns(batch)
        rows = batch_rows(batch, columns, self.model_version, hashed)
        keys = rows.keys
        if len(set(keys)) != len(keys):
            key, _ = Counter(keys).most_common(1)[0]
            raise InputError(f"key '{key}' appears more than once in the published rows")
        if not keys:
            return 0
        ns = self._namespace.encode()
        blobs = list(map(encode_record, rows.records()))
        store = self.store

        def commands() -> Iterator[bytes]:  # packed as they are sent: Redis runs one while we pack the next
            for start in range(0, len(keys), WRITE_CHUNK):
                yield redis_wire.msetnx(ns, keys[start:start + WRITE_CHUNK], blobs[start:start + WRITE_CHUNK])
            yield redis_wire.pack(b"HINCRBY", store.keys.meta(self.version).encode(), b"rows",
                                  b"%d" % len(keys))

        with store.translated("publishing"):
            results = redis_wire.send(store.client, commands())
            failed = [i for i, ok in enumerate(results[:-1]) if not ok]
            if failed:
                chunk = keys[failed[0] * WRITE_CHUNK:(failed[0] + 1) * WRITE_CHUNK]
                pipe = store.client.pipeline(transaction=False)
                for key in chunk:
                    pipe.exists(self._namespace + key)
                clash = next((k for k, n in zip(chunk, pipe.execute(), strict=True) if n), chunk[0])
                raise InputError(f"key '{clash}' appears more than once in the published rows")
        return len(keys)

    def _fix_columns(self, batch: pa.RecordBatch) -> tuple[tuple[str, ...], bool]:
        """The version's prediction columns and whether it keeps features hashes: set by the first batch
        any writer wrote (HSETNX), read once by every other."""
        if self._columns is not None:
            return self._columns
        mine = prediction_columns(batch.schema)
        meta = self.store.keys.meta(self.version)
        with self.store.translated("publishing"):
            pipe = self.store.client.pipeline(transaction=True)
            pipe.hsetnx(meta, "columns", json.dumps(list(mine)))
            pipe.hsetnx(meta, "hashed", "1" if features_hashed(batch.schema) else "0")
            pipe.hmget(meta, ["columns", "hashed"])
            stored, hashed = pipe.execute()[-1]
        if stored is None or hashed is None:
            raise StoreError(f"store version {self.version} has no record: it was deleted as an orphan")
        self._columns = (tuple(json.loads(stored)), hashed == b"1")
        return self._columns

    def commit(self, activate: bool = True) -> str:
        """Mark the version ready and, if `activate`, make it the active one: one atomic script. StoreError
        if the version was collected or its lease lost meanwhile (nothing is switched then)."""
        self._owner("commit")
        self._stop()
        keys = self.store.keys
        with self.store.translated("committing a publish"):
            self.store.scripts.commit(
                keys=[keys.meta(self.version), keys.lease(self.version), keys.pointer],
                args=[self._token, "1" if activate else "0", self.version, keys.channel])
        return self.version

    def abort(self) -> None:
        """Delete the partial version (its keys, then its record). If that fails too, it is left as an
        orphan for `gc` (its lease expires)."""
        self._owner("abort")
        self._stop()
        try:
            self.store.discard(self.version)
        except StoreError as exc:
            log.warning("could not delete partial store version %s of %s (gc will): %s", self.version,
                        self.store.url, exc)

    def _owner(self, doing: str) -> None:
        if self._token is None:
            raise StoreError(f"store version {self.version}: only the process that began a publish may "
                             f"{doing} it")

    def _stop(self) -> None:
        self._done.set()
        heartbeat = self._heartbeat
        if heartbeat is not None and heartbeat is not threading.current_thread():
            heartbeat.join()

    def _renew(self) -> None:
        """Renew the lease every third of `lease_s`, until the publish is over."""
        lease_s = self.store.opts.lease_s
        key = self.store.keys.lease(self.version)
        while not self._done.wait(lease_s / 3):
            try:
                with self.store.translated("renewing a publish lease"):
                    if not self.store.scripts.renew(keys=[key], args=[self._token, int(lease_s * 1000)]):
                        log.warning("store version %s lost its publish lease; its commit will fail",
                                    self.version)
                        return
            except StoreError as exc:
                log.warning("renewing the publish lease of store version %s failed (retrying): %s",
                            self.version, exc)


def begin(store: RedisStore, model_version: str, ttl_s: float | None, profile_json: str,
          meta_json: str) -> RedisPublish:
    """Register a new 'loading' version under a fresh lease (one script) and return its handle."""
    keys = store.keys
    token = secrets.token_hex(16)
    with store.translated("beginning a publish"):
        number = store.scripts.begin(
            keys=[keys.counter, keys.versions],
            args=[keys.prefix, token, int(store.opts.lease_s * 1000), model_version, repr(time.time()),
                  "" if ttl_s is None else repr(float(ttl_s)), profile_json, meta_json])
    return RedisPublish(store, str(number), model_version, token)
