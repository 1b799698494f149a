"""Version bookkeeping shared by every backend, as pure functions over `VersionInfo` lists.

Keeping these decisions (which version a rollback picks, what gc deletes, what may be activated or
deleted) in one place is what makes the backends agree; each backend only reads its versions and
carries out the answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from augury.errors import InputError, StoreError, VersionNotFoundError
from augury.store.base import LOADING, ORPHAN, READY, PredictionStore, VersionInfo


def version_number(version: str) -> int:
    """A version id ("1", "2", ...) as an int; VersionNotFoundError for anything that is not one."""
    text = str(version).strip()
    if not text.isdigit() or int(text) < 1:
        raise VersionNotFoundError(f"no store version '{version}' (versions are numbered 1, 2, ...)")
    return int(text)


def find(infos: Sequence[VersionInfo], version: str) -> VersionInfo:
    """The version called `version`, or VersionNotFoundError."""
    wanted = str(version_number(version))
    for info in infos:
        if info.version == wanted:
            return info
    raise VersionNotFoundError(f"no store version '{version}'")


def info_of(store: PredictionStore, version: str) -> VersionInfo | None:
    """Version `version` as `store` records it, or None if it has none: its active version when that is
    the one asked for (one read; the usual case), else found among all its versions. StoreError if the
    store cannot say."""
    active = store.active()
    if active is not None and active.version == version:
        return active
    try:
        return find(store.versions(), version)
    except VersionNotFoundError:
        return None


def check_activatable(info: VersionInfo) -> None:
    """Only a complete version may become active."""
    if info.state != READY:
        raise StoreError(f"store version {info.version} is {info.state}, not ready; it cannot be activated")


def check_deletable(info: VersionInfo) -> None:
    """The active version and a version a live publish is writing cannot be deleted."""
    if info.active:
        raise StoreError(
            f"store version {info.version} is active; activate or roll back to another "
            "version before deleting it"
        )
    if info.state == LOADING:
        raise StoreError(f"store version {info.version} is being written by a live publish")


def rollback_target(infos: Sequence[VersionInfo], to: str | None) -> VersionInfo:
    """The version `rollback(to)` activates: `to`, or the newest ready version older than the active one."""
    if to is not None:
        target = find(infos, to)
        check_activatable(target)
        return target
    active = next((i for i in infos if i.active), None)
    if active is None:
        raise StoreError("no active store version to roll back from")
    older = [i for i in infos if i.state == READY and int(i.version) < int(active.version)]
    if not older:
        raise StoreError(
            f"no ready store version older than the active one ({active.version}) to roll back to"
        )
    return max(older, key=lambda i: int(i.version))


def gc_victims(infos: Sequence[VersionInfo], keep: int) -> list[str]:
    """What `gc(keep)` deletes: orphans, and ready versions other than the newest `keep` and the active one.
    Oldest first. Versions being written by a live publish are never touched."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise InputError(f"gc keep must be an integer >= 0, not {keep!r}")
    ready = sorted((i for i in infos if i.state == READY), key=lambda i: int(i.version), reverse=True)
    kept = {i.version for i in ready[:keep]}
    victims = [i for i in infos if i.state == ORPHAN]
    victims += [i for i in ready if i.version not in kept and not i.active]
    return [i.version for i in sorted(victims, key=lambda i: int(i.version))]
