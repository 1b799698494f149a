"""The model loaded once in the fork server that the run's own LocalCluster forks its workers from, so
that every worker starts with the model, its framework and the compiled kernel already in memory (shared
copy-on-write) instead of loading them itself.

Python's fork server imports the modules named in its preload list when it starts, and nothing else
reaches into it; `dask_engine.start_fork_server` names this module there and hands the model over in the
environment variable `dask_engine.PRELOAD_ENV` (JSON: [reference, name, evaluator]), set only while the
server process is started. So this module does its work when it is imported, and is imported by nothing
but that server. Without the variable (a fork server started by someone else), it does nothing.

What the load saves, measured on 2 cores (BENCHMARKS.md, issue 12): each worker imported scikit-learn and
numba and loaded the model and its kernel itself, ~1.2 s of a core each on a quiet machine, up to 3-5 s
when both workers and the driver did it at once, all before the first task could score.
"""

from __future__ import annotations

import json
import os

from .dask_engine import PRELOAD_ENV
from .dask_worker import preload

_spec = os.environ.pop(PRELOAD_ENV, None)
if _spec:
    preload(*json.loads(_spec))
