"""The Redis prediction store: one store shared by every server of a fleet (and Valkey, which speaks the
same protocol). ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path.sock``;
options in `redis_conn`.

Layout, every key under ``<prefix>:`` (`redis_conn.Keys`): a version's predictions are one string key
each, ``<prefix>:v:<n>:<key>``, holding the same MessagePack record as every backend (`codec`); its
record is a hash ``<prefix>:meta:<n>`` (state, model version, columns, TTL, profile, meta, rows); the
active version's number is one key, ``<prefix>:active``, only ever switched by a script that checks the
version is ready and publishes the switch. Publishing goes through a handle (`redis_publish`), reading
through a `redis_read.Reader` (one round trip a lookup), administration through `redis_admin`.
Write-backs are ``<prefix>:wb:<len>:<model version>:<key>``, each set with Redis's own expiry at its
`expires_at` (and expiry still enforced on read), so `prune_written_back` has nothing to do.

Scripts read keys they compute from the prefix, so this store needs one Redis (or a primary with
replicas), not a Redis Cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import redis

from augury.errors import StoreError
from augury.store import redis_admin, redis_publish
from augury.store import versions as vs
from augury.store.base import StoredPrediction, VersionInfo, WrittenBack
from augury.store.codec import decode_record, dump_json, encode_record
from augury.store.publishing import check_publish_args, iter_batches
from augury.store.redis_conn import Keys, connect, parse, translated
from augury.store.redis_publish import RedisPublish
from augury.store.redis_read import CHUNK, Reader
from augury.store.writeback import checked, micros


@dataclass(frozen=True)
class Scripts:
    """The store's scripts, registered once (sent by SHA, loaded again after a restart by redis-py)."""

    begin: Any
    renew: Any
    commit: Any
    activate: Any
    mark_deleting: Any

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(client.register_script(redis_publish.BEGIN_LUA),
                   client.register_script(redis_publish.RENEW_LUA),
                   client.register_script(redis_publish.COMMIT_LUA),
                   client.register_script(redis_admin.ACTIVATE_LUA),
                   client.register_script(redis_admin.MARK_DELETING_LUA))


class RedisStore:
    """A versioned key -> prediction store in Redis (see the module docstring). Connecting is lazy: a
    store that cannot be reached fails on its first call, with `StoreUnavailable`."""

    #: every read is a network round trip: a server reads this store off its event loop (`reads_block`)
    network_reads = True
    #: writer processes of `augury publish` from a dataset (`base.SharedPublishing`; measured there)
    publish_writers = redis_publish.PUBLISH_WRITERS

    def __init__(self, url: str, **options: Any) -> None:
        self._reopen = (url, dict(options))
        connect_url, self.url, self.opts = parse(url, options)
        self.keys = Keys(self.opts.prefix)
        self.client = connect(connect_url, self.opts)
        self.scripts = Scripts.register(self.client)
        self.reader = Reader(self.client, self.keys, self.opts, self.url, connect_url)

    def reopen_args(self) -> tuple[str, dict[str, Any]]:
        """The URL (password included) and options this store was opened with, for a writer process."""
        url, options = self._reopen
        return url, dict(options)

    def require_existing(self) -> None:
        """StoreError if nothing was ever published under this prefix (`open_store(create=False)`: a
        mistyped URL or prefix must not read as an empty store); StoreUnavailable if Redis cannot say."""
        with self.translated("opening the store"):
            if not self.client.exists(self.keys.counter):
                raise StoreError(f"no store at {self.url} (prefix '{self.keys.prefix}'): nothing was ever "
                                 "published there")

    def translated(self, doing: str) -> AbstractContextManager[None]:
        return translated(self.url, doing)

    # -- reads -----------------------------------------------------------------------------------------

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """Look up `keys` in the active version; results aligned with `keys`, `None` for a miss."""
        return self.reader.get_many(keys)

    async def aget_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        """`get_many` awaited on the running event loop (`Reader.aget_many`): a server's lookups."""
        return await self.reader.aget_many(keys)

    def active(self) -> VersionInfo | None:
        """The active version, or None before the first activation (read now)."""
        return self.reader.active()

    def versions(self) -> list[VersionInfo]:
        """Every version, oldest first; a 'loading' version whose lease expired shows as ORPHAN."""
        return redis_admin.versions(self)

    # -- publishing ------------------------------------------------------------------------------------

    def begin_publish(self, *, model_version: str, ttl_s: float | None = None,
                      profile: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
                      ) -> RedisPublish:
        """Start a publish: a new 'loading' version and its handle (write, then commit or abort)."""
        check_publish_args(model_version, ttl_s)
        return redis_publish.begin(self, model_version, ttl_s, dump_json(profile, "profile"),
                                   dump_json(meta, "meta"))

    def join_publish(self, version: str) -> RedisPublish:
        """A handle that writes parts of a publish another process began (it cannot commit or abort)."""
        info = vs.find(self.versions(), version)
        if info.state != "loading":
            raise StoreError(f"store version {version} is {info.state}, not being published")
        return RedisPublish(self, info.version, info.model_version, None)

    def publish(self, batches: Iterable[pa.RecordBatch], *, model_version: str, ttl_s: float | None = None,
                profile: dict[str, Any] | None = None, meta: dict[str, Any] | None = None,
                activate: bool = True) -> VersionInfo:
        """Write a new version from `batches` through one handle, mark it ready, and activate it unless
        `activate` is False; a failure aborts it (nothing is left but what a crash leaves: an orphan)."""
        check_publish_args(model_version, ttl_s)
        profile_json, meta_json = dump_json(profile, "profile"), dump_json(meta, "meta")
        it = iter_batches(batches)
        handle = redis_publish.begin(self, model_version, ttl_s, profile_json, meta_json)
        try:
            for batch in it:
                handle.write(batch)
            handle.commit(activate)
        except BaseException:
            handle.abort()
            raise
        if activate:
            self.reader.refresh()
        return vs.find(self.versions(), handle.version)

    def discard(self, version: str) -> None:
        """Delete a version whatever its state (an aborted publish's)."""
        with self.translated("discarding a failed publish"):
            self.client.hset(self.keys.meta(version), "state", "deleting")
        redis_admin.purge(self, {version})

    # -- administration ----------------------------------------------------------------------------------

    def activate(self, version: str) -> VersionInfo:
        """Make a ready version the active one: one script moves the pointer and announces it."""
        return redis_admin.switch(self, vs.find(self.versions(), version))

    def rollback(self, to: str | None = None) -> VersionInfo:
        """Activate `to`, or the newest ready version older than the active one."""
        return redis_admin.switch(self, vs.rollback_target(self.versions(), to))

    def delete(self, version: str) -> None:
        """Delete a version that is neither active nor being written by a live publish."""
        info = vs.find(self.versions(), version)
        vs.check_deletable(info)
        redis_admin.delete(self, [info.version])

    def gc(self, keep: int = 2) -> list[str]:
        """Delete orphans and all but the newest `keep` ready versions (never the active one) and stray
        keys, with SCAN + UNLINK; returns the deleted versions. (Write-backs expire by themselves.)"""
        return redis_admin.gc(self, keep)

    # -- write-back ----------------------------------------------------------------------------------------

    def write_back(self, rows: Sequence[WrittenBack]) -> None:
        """Keep dynamic predictions beside the versions, each with Redis's expiry at its `expires_at`
        (one pipeline a `CHUNK` rows); a row already expired deletes the one kept for its key."""
        rows = checked(rows)
        now = time.time()
        with self.translated("writing back predictions"):
            for start in range(0, len(rows), CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for row in rows[start:start + CHUNK]:
                    key = self.keys.written_back(row.model_version) + row.key
                    if row.expires_at <= now:
                        pipe.delete(key)
                        continue
                    blob = encode_record((micros(row.computed_at), micros(row.expires_at), row.values,
                                          row.features_hash))
                    pipe.set(key, blob, pxat=max(1, int(row.expires_at * 1000) + 1))
                pipe.execute()

    def written_back(self, keys: Sequence[str], model_version: str) -> list[WrittenBack | None]:
        """The unexpired write-backs of `keys` made by `model_version`, aligned with `keys`."""
        if not keys:
            return []
        ns = self.keys.written_back(model_version)
        now_us = time.time() * 1e6
        out: list[WrittenBack | None] = []
        with self.translated("reading write-backs"):
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(keys), CHUNK):
                pipe.mget([ns + k for k in keys[start:start + CHUNK]])
            blobs = [b for chunk in pipe.execute() for b in chunk]
            for key, blob in zip(keys, blobs, strict=True):
                if blob is None:
                    out.append(None)
                    continue
                computed_us, expires_us, values, digest = decode_record(blob)
                out.append(None if expires_us <= now_us else WrittenBack(
                    key, values, model_version, computed_us / 1e6, expires_us / 1e6, digest))
        return out

    def prune_written_back(self) -> int:
        """Nothing to do: Redis deletes each write-back when it expires. Returns 0."""
        return 0

    def close(self) -> None:
        """Stop following the active version and close every connection (idempotent)."""
        self.reader.close()
        self.client.close()
        self.client.connection_pool.disconnect()
