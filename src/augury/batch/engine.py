"""Engines run a batch job's tasks. The seam: `Engine.run(tasks) -> results`, in any order.

`InlineEngine` scores in the calling process (one worker: no start-up cost, easy to debug).
`LocalEngine` (the default, "processes") runs a pool of worker processes on this machine, each loading the
model once and limited to its share of the cores' threads: every step of a chunk (decode, cast, hash,
predict, encode, write) runs in parallel, whatever holds the GIL.
`ThreadEngine` ("threads") runs `workers` threads in this process over one shared model, each model call
limited to one native thread: less memory (one copy of the model), but the Python parts of each chunk
take turns on the GIL; measured in BENCHMARKS.md, it is the slower of the two on 2 cores.
Both keep at most `2 * workers` tasks in flight, so memory stays bounded.
A distributed engine (Dask) plugs in here with the same two methods.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from typing import Any, Protocol

from augury.errors import BatchError
from augury.models import load_model
from augury.models.base import Model
from augury.models.evaluator import choice_for

from .sources import Task
from .worker import Job, TaskResult, score_task


class Engine(Protocol):
    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        """Score every task, yielding each result as it completes (order not guaranteed)."""
        ...

    def close(self) -> None:
        """Stop the workers; tasks not yet finished are abandoned (a resume redoes them)."""
        ...


def _thread_limits(threads: int) -> Any:
    """Limit native thread pools (OpenMP, BLAS) to `threads`; the returned handle restores them."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(threads)


class InlineEngine:
    """Scores tasks one after another in this process."""

    def __init__(self, job: Job, model: Model) -> None:
        self.job = job
        self.model = model

    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        for task in tasks:
            yield score_task(self.model, task, self.job)

    def close(self) -> None:
        pass


_worker_model: Model | None = None
_worker_job: Job | None = None


def _init_worker(job: Job, threads: int) -> None:
    global _worker_model, _worker_job
    # Ctrl-C reaches the whole process group: only the driver acts on it; a worker finishes its task
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    _thread_limits(threads)
    _worker_model = load_model(job.model_ref, name=job.model_name, threads=threads,
                               evaluator=choice_for(job.evaluator))
    _worker_job = job


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when the driver dies (even by kill -9), so no orphan
    keeps scoring for a run that is gone."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the driver died before prctl took effect
        os._exit(1)


def _run_in_worker(task: Task) -> TaskResult:
    assert _worker_model is not None and _worker_job is not None, "worker not initialised"
    if _worker_model.info.evaluator != _worker_job.evaluator:  # the run records one evaluator
        raise BatchError(f"a worker process scores the model with the evaluator "
                         f"{_worker_model.info.evaluator!r}, not the run's {_worker_job.evaluator!r}")
    return score_task(_worker_model, task, _worker_job)


def _bounded_map(pool: Executor, fn: object, tasks: Iterable[Task], limit: int) -> Iterator[TaskResult]:
    pending: set[Future[TaskResult]] = set()
    for task in tasks:
        pending.add(pool.submit(fn, task))  # type: ignore[arg-type]
        if len(pending) >= limit:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from (f.result() for f in done)


class ThreadEngine:
    """`workers` threads sharing `model`; native thread pools limited to one thread per call."""

    def __init__(self, job: Job, model: Model, workers: int) -> None:
        self.job = job
        self.model = model
        self.workers = workers
        self._limits = _thread_limits(1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="augury-batch")

    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        return _bounded_map(
            self.pool, lambda task: score_task(self.model, task, self.job), tasks, 2 * self.workers
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._limits is not None:
            self._limits.restore_original_limits()


class LocalEngine:
    """A pool of `workers` processes on this machine. Forked when this process runs no other thread
    (instant start, the imported frameworks shared), spawned otherwise (forking a threaded process is
    unsafe)."""

    def __init__(self, job: Job, workers: int) -> None:
        threads = max(1, (os.cpu_count() or 1) // workers)
        method = (
            "fork"
            if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
            else "spawn"
        )
        self.workers = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(job, threads),
        )

    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        return _bounded_map(self.pool, _run_in_worker, tasks, 2 * self.workers)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


ENGINES = ("auto", "threads", "processes", "inline")


def make_engine(name: str, job: Job, model: Model, workers: int) -> Engine:
    """`processes` (also `auto`) or `threads` with `workers` > 1; `inline`, or one worker, scores in this
    process."""
    if name not in ENGINES:
        from augury.errors import ConfigError

        raise ConfigError(f"unknown batch engine {name!r}; available: {', '.join(ENGINES)}")
    if name == "auto":
        name = "processes"
    if workers <= 1 or name == "inline":
        return InlineEngine(job, model)
    if name == "threads":
        return ThreadEngine(job, model, workers)
    return LocalEngine(job, workers)
