"""Publish leases: how a file store tells a live publish from one whose process died.

A publish registers its version as 'loading' and, in the same transaction, takes an exclusive `flock`
on a lease file beside the database (``<db>-publish-<n>.lease``). The kernel drops the lock when the
process exits, however it exits (kill -9 included), so a 'loading' version is an orphan exactly when its
lease can be locked by someone else, or its file is gone (a database copied mid-publish). `flock` locks
belong to an open file description, so this holds between threads of one process too, and pid reuse or
containers sharing a volume cannot fool it. POSIX only (augury's stores run on Linux and macOS).

Lease files exist only while a publish runs, or until gc collects a dead one: a publish killed mid-load
leaves an orphan version and its lease, one killed after it activated (before it removed its lease) a
ready version and its lease. `dead_leases` finds both kinds by the lock alone. A caller must hold the
database's write lock while it deletes them: a publish takes its lease inside its registering write
transaction, so no lease is then between being created and being locked (it would look dead).
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from augury.errors import StoreError


def lease_path(db_path: str, version: int) -> str:
    return f"{db_path}-publish-{version}.lease"


def dead_leases(db_path: str) -> list[str]:
    """The lease files beside `db_path` (``<db>-publish-<n>.lease``) that no live publish holds."""
    directory, base = os.path.split(db_path)
    prefix = f"{base}-publish-"
    try:
        names = sorted(os.listdir(directory or "."))
    except OSError as exc:
        raise StoreError(f"cannot list the publish leases beside {db_path}: {exc}") from exc
    found = [os.path.join(directory, n) for n in names
             if n.startswith(prefix) and n.endswith(".lease") and n[len(prefix):-len(".lease")].isdigit()]
    return [path for path in found if not writer_alive(path)]


class Lease:
    """An exclusive lease held by a live publish; `release` when the publish is over."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise StoreError(f"cannot take the publish lease {path}: {exc}") from exc

    def release(self) -> None:
        """Remove the lease file, then drop the lock. Call once the version's fate (ready, or removed)
        is committed: from then on nobody asks whether its writer is alive."""
        if self._fd is None:
            return
        try:
            remove_lease(self.path)
        finally:
            os.close(self._fd)
            self._fd = None


def writer_alive(path: str) -> bool:
    """True if a live publish holds the lease at `path`."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def remove_lease(path: str) -> bool:
    """Delete a dead publish's lease file, if it is still there; whether it was."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
        return True
    return False
