"""Worker processes that must not outlive the process that started them.

A batch run's scoring workers and a publish's writer processes work for their driver only: one killed
(even by ``kill -9``) must take them with it, or they would go on scoring for a run that is gone, or
loading a publish that nobody will commit (and holding its store's connections meanwhile).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading

#: prctl's option that sets the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """On Linux, have the kernel kill this process (SIGKILL) when its parent dies; exit at once if the
    parent, whose pid is `parent`, died before the request took effect. Elsewhere, nothing."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def start_method(may_fork: bool = True) -> str:
    """How to start worker processes: "fork" when this process runs no other thread (instant start, the
    imported frameworks and the loaded model shared) and `may_fork`, else "spawn" (forking a threaded
    process is unsafe). `may_fork` is False once this process has used an object store
    (`batch.location.used_object_store`): its client (pyarrow's S3 or GCS filesystem) runs native threads
    that `threading` does not count, which a forked child would inherit in whatever state they were."""
    forkable = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
    return "fork" if may_fork and forkable else "spawn"
