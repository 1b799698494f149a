"""What wrk sends to a system, and one wrk run parsed into numbers.

wrk runs as ``wrk -t1 -c<connections> -d<duration>s --timeout 10s --latency -s <script> <url>`` (one
thread: it takes the second core). The scripts in benchmarks/wrk/ print a ``WRKJSON {...}`` summary line:
requests, duration, bytes, error counts, latency mean/stdev/max and p50/p90/p99/p99.9 in µs.

- ``post.lua``: one body, built once (no per-request Lua);
- ``post_random.lua``: a body picked at random per request from a file of bodies;
- ``get_random.lua``: a GET of a key picked uniformly at random per request from a file of keys;
- ``get_zipf.lua``: the same keys, drawn from a Zipf distribution (see the script).

The random scripts format every request once at start-up, so the systems they compare pay the same
per-request cost in wrk: one table index and one random number.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Any

from .workload import LOOKUP, WRK_DIR, Workload

#: the environment variable each wrk script reads its data file from.
SCRIPT_DATA = {"post.lua": "BODY_FILE", "post_random.lua": "BODIES_FILE", "get_random.lua": "KEYS_FILE",
               "get_zipf.lua": "KEYS_FILE"}
#: the scripts that GET ``LOOKUP + <key>`` (they read the prefix from PATH_PREFIX).
GET_SCRIPTS = ("get_random.lua", "get_zipf.lua")


@dataclass(frozen=True)
class Load:
    """What wrk sends: a script in wrk/, the URL path, the `Workload` file the script reads, and any
    further environment variables the script reads (``(name, value)`` pairs)."""

    script: str
    path: str
    data: str
    settings: tuple[tuple[str, str], ...] = ()

    def env(self, w: Workload) -> dict[str, str]:
        env = {SCRIPT_DATA[self.script]: str(getattr(w, self.data))}
        if self.script in GET_SCRIPTS:
            env["PATH_PREFIX"] = LOOKUP
        env.update(self.settings)
        return env


def run_wrk(load: Load, w: Workload, port: int, connections: int, duration: float,
            threads: int = 1, cpus: str = "") -> dict[str, Any]:
    """One wrk run against 127.0.0.1:`port`: the script's WRKJSON numbers, plus ``rps`` (requests over
    wrk's own measured duration), ``non_2xx`` (wrk's status errors: 4xx and 5xx), ``socket_errors``
    (connect + read + write + timeout) and the command line."""
    env = dict(os.environ, **load.env(w))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "--latency",
           "-s", str(WRK_DIR / load.script), f"http://127.0.0.1:{port}{load.path}"]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    m = re.search(r"^WRKJSON (\{.*\})$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk output not parsed (rc={out.returncode}): "
                           f"{out.stdout[-800:]} {out.stderr[-800:]}")
    r: dict[str, Any] = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["non_2xx"] = r["err_status"]
    r["socket_errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    r["command"] = " ".join(cmd)
    return r
