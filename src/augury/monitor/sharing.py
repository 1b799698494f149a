"""One set of metrics for a server of several worker processes (``augury serve --workers N``).

uvicorn hands each connection to one of N processes, so a scrape of ``/metrics`` reaches one of them,
and each counts only its own requests. Instead, every worker leaves its metrics' state in a file of one
directory (``<pid>.json``, written atomically: a temporary file renamed over the old one) every
`SHARE_EVERY_S` seconds, when it stops, and just before it answers a scrape; the worker that answers adds
the other workers' last states to its own. So counters and histograms are server-wide totals (at most
`SHARE_EVERY_S` old for the other workers), and the in-flight and queue-depth gauges are sums over the
workers that are alive.

A worker that died keeps its file: its counts stay in the totals (which must never go down, as a
Prometheus counter), while its gauges, which described a moment of a process that is gone, are left out.
The launcher makes the directory and removes it when the server stops.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: seconds between two writes of a worker's state (other workers' counts are at most this old).
SHARE_EVERY_S = 1.0


class SharedState:
    """The state files of one server's workers: this process writes its own and reads the others'."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._pid = os.getpid()

    @property
    def path(self) -> Path:
        return self.directory / f"{self._pid}.json"

    def write(self, state: dict[str, Any]) -> None:
        """Replace this process's state file (atomically); a failure is logged, never raised."""
        self._pid = os.getpid()  # a forked worker writes under its own pid
        tmp = self.directory / f".{self._pid}.json.tmp"
        try:
            tmp.write_text(json.dumps({"pid": self._pid, **state}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("could not share this worker's metrics in %s: %s", self.directory, exc)

    def others(self) -> list[dict[str, Any]]:
        """The other workers' last states, each with ``alive`` (whether its process still runs)."""
        out = []
        try:
            paths = sorted(self.directory.glob("*.json"))
        except OSError:
            return []
        for path in paths:
            if path.stem == str(os.getpid()):
                continue
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError):  # removed meanwhile, or not ours
                continue
            if isinstance(state, dict) and isinstance(state.get("pid"), int):
                state["alive"] = _alive(state["pid"])
                out.append(state)
        return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
