"""Worker processes that must not outlive the process that started them.

A batch run's scoring workers and a publish's writer processes work for their driver only: one killed
(even by ``kill -9``) must take them with it, or they would go on scoring for a run that is gone, or
loading a publish that nobody will commit (and holding its store's connections meanwhile).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

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
