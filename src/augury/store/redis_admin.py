"""Version administration of a Redis store: listing, switching the pointer, deleting, gc.

The decisions (what a rollback picks, what gc deletes, what may be activated or deleted) are
`versions.py`'s, shared with every backend; this module reads the versions and carries them out. Each
switch is one script that checks the version is still ready as it moves the pointer and publishes the
switch (readers follow it: `redis_read`). A delete first marks the version 'deleting' in a script that
checks it is neither active nor being published (so nothing can activate it meanwhile), then removes
its keys with SCAN and UNLINK (never KEYS, which would stop the server for the whole keyspace; UNLINK
frees the memory off the server's main thread), then its record. A delete interrupted midway leaves a
'deleting' version, listed as an orphan, which the next gc finishes.

gc also removes stray keys: those of version numbers that have no record (a writer that joined a
publish and kept writing after the version was collected). A number is stray only if it is at most the
counter and not in the set of versions, both read in one transaction: `begin` takes a number and records
it in one script, so no live publish is ever between the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from augury.store import versions as vs
from augury.store.base import VersionInfo
from augury.store.redis_read import info_from

if TYPE_CHECKING:
    from augury.store.redis_store import RedisStore

#: keys a SCAN step looks at, and keys one UNLINK removes.
SCAN_COUNT = 1_000

ACTIVATE_LUA = """
if redis.call('HGET', KEYS[1], 'state') ~= 'ready' then
  return redis.error_reply('augury: store version ' .. ARGV[1] .. ' is no longer ready to activate')
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"""
MARK_DELETING_LUA = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  return redis.error_reply('augury: store version ' .. ARGV[1] .. ' is active; it cannot be deleted')
end
if redis.call('HGET', KEYS[1], 'state') == 'loading' and redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('augury: store version ' .. ARGV[1] .. ' is being written by a live publish')
end
redis.call('HSET', KEYS[1], 'state', 'deleting')
return 1
"""


def versions(store: RedisStore) -> list[VersionInfo]:
    """Every version, oldest first (two round trips)."""
    keys, client = store.keys, store.client
    with store.translated("listing versions"):
        numbers = sorted((int(n) for n in client.smembers(keys.versions)), key=int)
        pipe = client.pipeline(transaction=True)
        pipe.get(keys.pointer)
        for n in numbers:
            pipe.hgetall(keys.meta(n))
            pipe.exists(keys.lease(n))
        found = pipe.execute()
    active = found[0].decode() if found[0] is not None else None
    infos = []
    for i, n in enumerate(numbers):
        fields, leased = found[1 + 2 * i], found[2 + 2 * i]
        if fields:  # (a version deleted between the two reads)
            infos.append(info_from(str(n), fields, active=str(n) == active, leased=bool(leased)))
    return infos


def switch(store: RedisStore, info: VersionInfo) -> VersionInfo:
    """Make ready version `info` the active one (one script), and tell this process's reader at once."""
    vs.check_activatable(info)
    keys = store.keys
    with store.translated("activating"):
        store.scripts.activate(keys=[keys.meta(info.version), keys.pointer],
                               args=[info.version, keys.channel])
    store.reader.refresh()
    return VersionInfo(**{**info.__dict__, "active": True})


def delete(store: RedisStore, numbers: Iterable[str]) -> None:
    """Mark each version 'deleting' (refused for the active one and a live publish's), then remove their
    keys and records."""
    keys = store.keys
    marked = []
    with store.translated("deleting"):
        for n in numbers:
            store.scripts.mark_deleting(keys=[keys.meta(n), keys.pointer, keys.lease(n)], args=[n])
            marked.append(n)
    purge(store, set(marked))


def purge(store: RedisStore, numbers: set[str], strays: bool = False) -> int:
    """Remove the prediction keys of versions `numbers` (and, with `strays`, of numbers that have no
    record: see the module docstring) with SCAN + UNLINK, then their records; how many keys."""
    keys, client = store.keys, store.client
    removed = 0
    with store.translated("removing versions"):
        live: set[str] = set()
        top = 0
        if strays:
            pipe = client.pipeline(transaction=True)
            pipe.get(keys.counter)
            pipe.smembers(keys.versions)
            counter, members = pipe.execute()
            top, live = int(counter or 0), {m.decode() for m in members}
        doomed: list[bytes] = []
        for key in client.scan_iter(match=keys.all_predictions, count=SCAN_COUNT):
            n = keys.number_of(key)
            if n in numbers or (strays and n.isdigit() and int(n) <= top and n not in live):
                doomed.append(key)
                if len(doomed) >= SCAN_COUNT:
                    removed += client.unlink(*doomed)
                    doomed = []
        if doomed:
            removed += client.unlink(*doomed)
        if numbers:
            pipe = client.pipeline(transaction=True)
            for n in numbers:
                pipe.unlink(keys.meta(n), keys.lease(n))
            pipe.srem(keys.versions, *numbers)
            pipe.execute()
    return removed


def gc(store: RedisStore, keep: int) -> list[str]:
    """Delete orphans and all but the newest `keep` ready versions (never the active one), and stray
    keys; the deleted versions, oldest first."""
    victims = vs.gc_victims(versions(store), keep)
    keys = store.keys
    with store.translated("collecting"):
        for n in victims:
            store.scripts.mark_deleting(keys=[keys.meta(n), keys.pointer, keys.lease(n)], args=[n])
    purge(store, set(victims), strays=True)
    return victims
