"""The Dask engine's side on each worker (`dask_engine` is the driver's): the per-process model cache,
the task function, and the plugins of a LocalCluster's workers (out of the driver's Ctrl-C; the model
loaded from the worker's start).

Imported only where `distributed` is installed (it subclasses its `WorkerPlugin`).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from distributed import WorkerPlugin

from augury.errors import BatchError
from augury.models import load_model
from augury.models.base import Model, ModelInfo

from .sources import Task
from .worker import Job, TaskResult, score_task


class IgnoreInterrupt(WorkerPlugin):
    """Ctrl-C reaches the terminal's whole process group, a LocalCluster's workers included: only the
    driver acts on it (it closes the cluster); a worker finishes its task, as in the process engine.
    Without this, the workers died on the signal with Dask's tracebacks on the terminal."""

    name = "augury-ignore-sigint"  # the plugin's, for Dask

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():  # a worker of its own process
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class LoadModel(WorkerPlugin):
    """Starts loading the run's model on a thread as soon as a worker of the run's own LocalCluster
    starts, while the other workers start and the driver connects, rather than when the driver first
    asks (`info_on_worker`, which then waits for this load under the cache's lock, or loads the model
    itself if it comes first: once either way)."""

    name = "augury-load-model"  # the plugin's, for Dask

    def __init__(self, ref: str, model_name: str | None, evaluator: str) -> None:
        self.ref, self.model_name, self.evaluator = ref, model_name, evaluator

    def setup(self, worker: Any) -> None:
        threading.Thread(target=self._load, name=self.name, daemon=True).start()

    def _load(self) -> None:
        preload(self.ref, self.model_name, self.evaluator)


def preload(ref: str, name: str | None, evaluator: str) -> None:
    """Load the model into this process's cache ahead of need (a worker as it starts, or the fork server
    its workers are forked from). Only a head start: a failure is left to the run's own call, which
    loads the model again and reports the error, with its message, in the run."""
    try:
        _cache.get(ref, name, evaluator, None)
    except Exception:
        return


#: models a worker keeps between runs (the oldest loaded goes first).
MAX_MODELS = 2


class _ModelCache:
    """The models one worker process loaded, by (reference, name, evaluator). `loads` counts the loads by
    process id, so a test can see that a worker loaded its model once for many tasks, or not at all when
    it was forked with it from the fork server (`dask_forkserver`)."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str | None, str], Model] = {}
        self.loads: dict[int, int] = {}
        self.lock = threading.Lock()

    def get(self, ref: str, name: str | None, evaluator: str, version: str | None) -> Model:
        with self.lock:
            model = self.models.get((ref, name, evaluator))
            if model is None or (version is not None and model.info.version != version):
                model = load_model(ref, name=name, threads=1, evaluator=evaluator)
                self.models.pop((ref, name, evaluator), None)
                self.models[(ref, name, evaluator)] = model
                self.loads[os.getpid()] = self.loads.get(os.getpid(), 0) + 1
                while len(self.models) > MAX_MODELS:  # a long-lived cluster serves many runs
                    del self.models[next(iter(self.models))]
            return model


_cache = _ModelCache()


def loads_in_worker() -> int:
    """How many times this worker process loaded a model itself (run on the workers by `Client.run`)."""
    return _cache.loads.get(os.getpid(), 0)


def info_on_worker(ref: str, name: str | None, evaluator: str, version: str | None = None) -> ModelInfo:
    """The model as this worker loaded it; one cached with another `version` (the file was replaced
    since an earlier run on a long-lived cluster) is loaded again first."""
    return _cache.get(ref, name, evaluator, version).info


def score_on_worker(job: Job, task: Task, evaluator: str) -> TaskResult:
    model = _cache.get(job.model_ref, job.model_name, evaluator, job.model_version or None)
    if job.model_version and model.info.version != job.model_version:
        raise BatchError(f"a Dask worker loaded version {model.info.version} of the model, not the run's "
                         f"{job.model_version}: does {job.model_ref} name the same file on every worker?")
    if model.info.evaluator != job.evaluator:  # the run records one evaluator (invariant 2)
        raise BatchError(f"a Dask worker scores the model with the evaluator {model.info.evaluator!r}, "
                         f"not the run's {job.evaluator!r}")
    return score_task(model, task, job)


def pid() -> int:
    """This worker's process id (run on the workers by `Client.run`, e.g. to stop one in a test)."""
    return os.getpid()
