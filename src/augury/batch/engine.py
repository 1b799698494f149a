"""Engines run a batch job's tasks. The seam: `Engine.model_info()`, the model as the engine's workers
loaded it, `Engine.slots()`, how many tasks it scores at once (the plan cuts the input for them), then
`Engine.run(job, tasks) -> results`, in any order.

The evaluator decision (`augury.models.evaluator`) is made where the model is scored: an engine's workers
load the model with the evaluator asked for, and the run records the decision they made (a worker whose
decision differs from the run's refuses to score).

A process pool's driver loads the model too, before it forks its workers, with the same evaluator: the
framework, numba and the compiled kernel are then shared by the forked workers, which find the kernel
compiled. Keeping numba out of the driver costs more than it saves (BENCHMARKS.md, issue 12): the driver
then holds no LLVM code (34-67 MB of its PSS), but each worker imports numba and loads the kernel itself
(+50-60 MB of private memory each, and LLVM's code touched again), 2 workers on 1M rows peaking at
677-689 MB against 487-576 MB.

`InlineEngine` scores in the calling process (one worker: no start-up cost, easy to debug).
`LocalEngine` (the default, "processes") runs a pool of worker processes on this machine, each loading the
model once and limited to its share of the cores' threads: every step of a chunk (decode, cast, hash,
predict, encode, write) runs in parallel, whatever holds the GIL.
`ThreadEngine` ("threads") runs `workers` threads in this process over one shared model, each model call
limited to one native thread: less memory (one copy of the model), but the Python parts of each chunk
take turns on the GIL; measured in BENCHMARKS.md, it is the slower of the two on 2 cores.
Both keep at most `2 * workers` tasks in flight, so memory stays bounded.
`DaskEngine` ("dask", `dask_engine`) runs the same tasks on a Dask cluster, with the same two methods.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from augury.children import die_with_parent, start_method
from augury.errors import AuguryError, BatchError, ConfigError
from augury.models import load_model
from augury.models.base import Model, ModelInfo
from augury.models.evaluator import Choice

from .location import used_object_store
from .sources import Task
from .worker import Job, TaskResult, score_task


class Engine(Protocol):
    def model_info(self) -> ModelInfo:
        """The model as this engine's workers loaded it; its `evaluator` is the run's decision."""
        ...

    def slots(self) -> int:
        """How many tasks this engine scores at once: what the run's plan cuts the input for."""
        ...

    def run(self, job: Job, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        """Score every task, yielding each result as it completes (order not guaranteed)."""
        ...

    def close(self, wait: bool = True) -> None:
        """Stop the workers; tasks not yet finished are abandoned (a resume redoes them). With `wait`
        False an engine may go on stopping while the run commits its output; the next `close()` waits."""
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

    def __init__(self, model: Model) -> None:
        self.model = model

    def model_info(self) -> ModelInfo:
        return self.model.info

    def slots(self) -> int:
        return 1

    def run(self, job: Job, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        for task in tasks:
            yield score_task(self.model, task, job)

    def close(self, wait: bool = True) -> None:
        pass


_worker_model: Model | None = None
_worker_error: AuguryError | None = None


def _init_worker(model_ref: str, model_name: str | None, evaluator: Choice, threads: int, driver: int
                 ) -> None:
    global _worker_model, _worker_error
    # Ctrl-C reaches the whole process group: only the driver acts on it; a worker finishes its task
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(driver)  # (driver: the pid of the process that started the pool)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    _thread_limits(threads)
    try:
        _worker_model = load_model(model_ref, name=model_name, threads=threads, evaluator=evaluator)
    except AuguryError as exc:  # kept for the driver's first call: a pool whose initializer raises breaks
        _worker_error = exc


def _worker() -> Model:
    if _worker_error is not None:
        raise _worker_error
    assert _worker_model is not None, "worker not initialised"
    return _worker_model


def _info_in_worker() -> ModelInfo:
    return _worker().info


def _run_in_worker(job: Job, task: Task) -> TaskResult:
    model = _worker()
    if model.info.evaluator != job.evaluator:  # the run records one evaluator
        raise BatchError(f"a worker process scores the model with the evaluator "
                         f"{model.info.evaluator!r}, not the run's {job.evaluator!r}")
    return score_task(model, task, job)


def _bounded_map(pool: Executor, fn: Callable[[Task], TaskResult], tasks: Iterable[Task],
                 limit: int) -> Iterator[TaskResult]:
    pending: set[Future[TaskResult]] = set()
    for task in tasks:
        pending.add(pool.submit(fn, task))
        if len(pending) >= limit:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from (f.result() for f in done)


class ThreadEngine:
    """`workers` threads sharing `model`; native thread pools limited to one thread per call."""

    def __init__(self, model: Model, workers: int) -> None:
        self.model = model
        self.workers = workers
        self._limits = _thread_limits(1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="augury-batch")

    def model_info(self) -> ModelInfo:
        return self.model.info

    def slots(self) -> int:
        return self.workers

    def run(self, job: Job, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        return _bounded_map(self.pool, lambda task: score_task(self.model, task, job), tasks,
                            2 * self.workers)

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None


class LocalEngine:
    """A pool of `workers` processes on this machine. Forked when this process runs no other thread
    (instant start, the imported frameworks shared), spawned otherwise (forking a threaded process is
    unsafe), and spawned when `may_fork` is False: a run on an object store, whose client (pyarrow's S3
    or GCS filesystem) runs native threads that `threading` does not count and that a forked child
    would inherit in whatever state they were. Each worker loads the model once, with the evaluator
    asked for."""

    def __init__(self, model_ref: str, model_name: str | None, evaluator: Choice, workers: int,
                 may_fork: bool = True) -> None:
        # before the fork: the framework and the compiled evaluator are shared by the workers, and a bad
        # model file fails here, with its own message
        self.preloaded = load_model(model_ref, name=model_name, evaluator=evaluator).info
        threads = max(1, (os.cpu_count() or 1) // workers)
        method = start_method(may_fork and not used_object_store())
        #: how the workers are started ("fork" or "spawn")
        self.start_method = method
        self.workers = workers
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(model_ref, model_name, evaluator, threads, os.getpid()),
        )

    def model_info(self) -> ModelInfo:
        """The first worker's model (starting the pool); the others must decide alike (`_run_in_worker`)."""
        try:
            info = self.pool.submit(_info_in_worker).result()
        except BrokenProcessPool as exc:
            raise BatchError("a worker process died while loading the model") from exc
        if info.version != self.preloaded.version:
            raise BatchError(f"the worker processes loaded version {info.version} of the model, "
                             f"not {self.preloaded.version}: was the model file replaced?")
        return info

    def slots(self) -> int:
        return self.workers

    def run(self, job: Job, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        return _bounded_map(self.pool, functools.partial(_run_in_worker, job), tasks, 2 * self.workers)

    def close(self, wait: bool = True) -> None:
        # waits either way: its idle workers' memory would add to the driver's while it merges
        self.pool.shutdown(wait=True, cancel_futures=True)


ENGINES = ("auto", "threads", "processes", "inline", "dask")


def make_engine(name: str, model_ref: str, model_name: str | None, evaluator: Choice, workers: int,
                scheduler: str | None = None, may_fork: bool = True) -> Engine:
    """`processes` (also `auto`) or `threads` with `workers` > 1; `inline`, or one worker, scores in this
    process; `dask` runs on the cluster at `scheduler`, or on a LocalCluster of `workers` processes (even
    one). The model is loaded where it is scored: here for inline and threads, in each worker process
    for processes and dask. `may_fork` False: worker processes are spawned (`LocalEngine`)."""
    if name not in ENGINES:
        raise ConfigError(f"unknown batch engine {name!r}; available: {', '.join(ENGINES)}")
    if scheduler is not None and name != "dask":
        raise ConfigError("--scheduler is the Dask engine's: pass --engine dask with it")
    if name == "dask":
        from .dask_engine import DaskEngine  # imports distributed only when asked for

        return DaskEngine(model_ref, model_name, evaluator, workers, scheduler)
    if name == "auto":
        name = "processes"
    if workers > 1 and name == "processes":
        return LocalEngine(model_ref, model_name, evaluator, workers, may_fork)
    model = load_model(model_ref, name=model_name, evaluator=evaluator)
    if workers <= 1 or name == "inline":
        return InlineEngine(model)
    return ThreadEngine(model, workers)
