"""`DaskEngine`: a batch run's tasks scored on a Dask distributed cluster (`--engine dask`).

The seam is the other engines' (`engine.Engine`): the driver plans the tasks, the engine submits each
one, a small picklable reference (`sources.Task`, `worker.Job`), to the cluster, and the driver commits
the results in task order, as always. A Dask worker reads, scores and writes its task itself, with the
very function the process pool runs (`worker.score_task`), so the output and the bad-row accounting are
the same whatever the engine.

- **The cluster.** `scheduler` (``tcp://HOST:PORT``) joins a running cluster and leaves it running;
  without one, a `LocalCluster` of `workers` processes, one thread each (and one native thread per
  model call: the processes are the parallelism), is started for the run and closed after it.
- **The model, once per worker.** Each worker process keeps the models it loaded (`dask_worker`), keyed
  by the model reference, name and evaluator asked for; the run's own LocalCluster forks its workers
  from a fork server that loaded the model once (`start_fork_server`), so they start with it. A cached
  model whose version is not the run's is loaded again (the file was replaced between two runs on a
  long-lived cluster), and a worker whose version or evaluator still differs from the run's refuses to
  score, as in the process engine.
  The model reference must name the same file (or importable `module:function`) on every worker.
- **Exactly once.** A part appears by rename only when complete and its name is the task's, so a task
  retried after its worker died (Dask reschedules it on another worker) replaces, never duplicates, what
  an earlier attempt may have finished; a task whose workers keep dying (Dask's `allowed-failures`)
  fails the run cleanly, and `--resume` scores only the missing tasks.
- **Paths.** Tasks and the staging folder are handed over as absolute paths (`batch.location` turns
  ``file://`` URLs into them), which every worker must see: one machine, or a shared file system. So
  a Dask run's errors file names each input file by its absolute path.

Dask's errors are translated here: an unreachable scheduler, a cluster without workers, and a worker
killed while scoring become `BatchError`s with one readable line; augury's own errors raised in a
worker (a bad input file) come back as they were raised.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from augury.errors import AuguryError, BatchError, ConfigError, MissingExtraError
from augury.models import load_model
from augury.models.base import ModelInfo
from augury.models.evaluator import Choice

from .sources import Task
from .worker import Job, TaskResult

#: how long joining a cluster may take (the scheduler's answer, then its first worker).
CONNECT_TIMEOUT_S = 10.0
#: the environment variable that hands the model to the fork server (`dask_forkserver`).
PRELOAD_ENV = "AUGURY_DASK_PRELOAD_MODEL"
#: native threads per model call in a worker: the cluster's processes are the parallelism.
_NATIVE_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _import_distributed() -> tuple[Any, Any]:
    """`distributed` and this engine's worker side (`dask_worker`, which needs it)."""
    try:
        import distributed

        from . import dask_worker
    except ImportError as exc:
        raise MissingExtraError("the Dask engine", "dask", exc.name or "distributed") from exc
    return distributed, dask_worker


_METHOD = "distributed.worker.multiprocessing-method"


def _uses_fork_server() -> bool:
    """Whether the run's own LocalCluster starts its workers from a fork server (Python's `forkserver`,
    which Dask supports: a clean process that imports what its preload list names, and forks each worker
    from it) instead of spawning each, which imports everything afresh: on 2 cores, a cluster ready and
    closed faster (BENCHMARKS.md, issue 12). Not where the user configured another method (Dask's
    `distributed.worker.multiprocessing-method`), or the platform has no fork server."""
    if importlib.util.find_spec("distributed") is None:
        return False  # (`_import_distributed` says which extra to install)
    import dask

    return (dask.config.get(_METHOD, "spawn") == "spawn"  # (Dask's default, set when distributed loads)
            and "forkserver" in multiprocessing.get_all_start_methods())


def start_fork_server(ref: str, name: str | None, evaluator: str) -> None:
    """Start this process's fork server, if none runs yet, with the run's model loaded in it
    (`dask_forkserver`): the workers forked from it then have the model, its framework and kernel in
    memory from their first instant, shared. It starts at once and loads on the other core while the
    driver imports Dask, checks the model and starts the scheduler. Its environment is the workers' (one
    native thread per call, `_NATIVE_THREADS`, read by OpenMP and BLAS when they load), plus the model's
    reference for `dask_forkserver`; both are set in this process only while the server is started.

    A fork server already running (an earlier run in this process) is kept, whatever it holds: its
    workers load the model themselves (`dask_worker.LoadModel`), as they did before."""
    ctx = multiprocessing.get_context("forkserver")
    # (Dask's own list, which it sets only if no fork server runs yet, adds pandas, which nothing here uses)
    ctx.set_forkserver_preload(["distributed", "augury.batch.dask_forkserver"])
    env = {**_NATIVE_THREADS, PRELOAD_ENV: json.dumps([ref, name, evaluator])}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        # `multiprocessing.forkserver.ensure_running` is in that module's __all__ but not in Python's
        # library reference, which documents no way to start the fork server ahead of its first process.
        # The documented way, starting a process through the context (`ctx.Process(...).start()`), starts
        # the server too, but returns only once the server has forked it, i.e. after the preload: with a
        # preload that takes 1 s, 1.09-1.12 s against 0.01 s for this call (Python 3.11.7 and 3.12.1, whose
        # forkserver.py are the same file). That puts the model's load back on the driver's critical path,
        # and doing it on a thread instead would leave the model's reference and the workers' thread limits
        # in this process's environment for as long as the preload takes (they must be there while the
        # server is spawned, and only then). So this call stays; checked on 3.11.7 and 3.12.1.
        multiprocessing.forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


def check_reachable(address: str, timeout_s: float = 2.0) -> None:
    """Fail at once, in one line, when nothing listens at a ``tcp://`` scheduler address (Dask itself
    retries a refused connection until its timeout)."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return
    try:
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--scheduler {address!r} is not a scheduler address (tcp://HOST:PORT)") from exc
    if not parts.hostname or port is None:
        raise ConfigError(f"--scheduler {address!r} is not a scheduler address (tcp://HOST:PORT)")
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise BatchError(f"cannot reach the Dask scheduler at {address}: {exc.strerror or exc}") from exc


class DaskEngine:
    """Tasks scored on a Dask cluster: the one at `scheduler`, or a LocalCluster of `workers` processes."""

    def __init__(self, model_ref: str, model_name: str | None, evaluator: Choice, workers: int,
                 scheduler: str | None = None) -> None:
        fork_server = scheduler is None and _uses_fork_server()
        if fork_server:  # first: it loads the model on the other core while this one goes on
            start_fork_server(model_ref, model_name, evaluator)
        distributed, self.on_worker = _import_distributed()
        # the driver loads the model too: a bad model file fails here with its own message, and the
        # workers' version is checked against this one. With the library's evaluator: the driver scores
        # nothing, and (unlike a forked pool) shares nothing with its workers, so compiling here
        # would only cost time and memory (numba's import and LLVM, ~1 s and ~100 MB)
        self.preloaded = load_model(model_ref, name=model_name, evaluator="library").info
        self.model_ref, self.model_name, self.evaluator = model_ref, model_name, evaluator
        self.address = scheduler or "a local Dask cluster"
        self.cluster: Any = None
        self._closing: threading.Thread | None = None
        self._kill_errors: tuple[type[BaseException], ...] = (distributed.KilledWorker,)
        try:
            if scheduler is None:
                import dask

                with dask.config.set({_METHOD: "forkserver"} if fork_server else {}):
                    self.cluster = self._local_cluster(distributed, workers)
                self.client = distributed.Client(self.cluster, set_as_default=False)
            else:
                check_reachable(scheduler)
                self.client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, RuntimeError) as exc:  # RuntimeError: a worker failed to start
            self.close()
            raise BatchError(f"cannot start or reach {self.address}: {exc}") from exc
        except ValueError as exc:
            self.close()
            raise ConfigError(f"--scheduler {scheduler!r} is not a scheduler address: {exc}") from exc

    def _local_cluster(self, distributed: Any, workers: int) -> Any:
        return distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, env=dict(_NATIVE_THREADS),
            silence_logs=logging.ERROR,  # the run's own messages say what matters
            # no dashboard, and the scheduler's HTTP endpoints on a free port, not 8787: a second
            # cluster on the machine (another run) would otherwise warn and take another port
            dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
            # set up as each worker starts (a worker that replaces a dead one too): Ctrl-C is
            # the driver's from the start, and the model loads while the cluster starts
            plugins=(self.on_worker.IgnoreInterrupt(),
                     self.on_worker.LoadModel(self.model_ref, self.model_name, self.evaluator)),
        )

    def model_info(self) -> ModelInfo:
        """The model as the workers loaded it: every worker there now loads it at once, in parallel
        (rather than each at its first task, after the others started scoring), and each must agree
        with the driver's version and with the others' evaluator; a worker that joins later checks its
        own at each task."""
        try:
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise BatchError(f"{self.address} has no worker (waited {CONNECT_TIMEOUT_S:.0f} s)") from exc
        token = uuid.uuid4().hex[:12]
        futures = [
            self.client.submit(self.on_worker.info_on_worker, self.model_ref, self.model_name,
                               self.evaluator, self.preloaded.version, key=f"augury-model-info-{token}-{i}",
                               pure=False, workers=[address], allow_other_workers=True)
            for i, address in enumerate(self.client.nthreads())
        ]
        infos: list[ModelInfo] = [self._result(f) for f in futures]
        for info in infos:
            if info.version != self.preloaded.version:
                raise BatchError(f"a Dask worker loaded version {info.version} of the model, not "
                                 f"{self.preloaded.version}: does {self.model_ref} name the same file there?")
            if info.evaluator != infos[0].evaluator:
                raise BatchError(f"Dask workers decided on different evaluators ({infos[0].evaluator}, "
                                 f"{info.evaluator}): install the same packages on every worker")
        return infos[0]

    def slots(self) -> int:
        """The cluster's worker threads now (an existing cluster's, not this machine's cores)."""
        threads: dict[str, int] = self.client.nthreads()
        return max(1, sum(threads.values()))

    def run(self, job: Job, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        """Keep at most 2 tasks per worker thread in flight (memory stays bounded on the driver and the
        workers), yielding results as they complete."""
        distributed, _ = _import_distributed()
        run_id = uuid.uuid4().hex[:12]
        limit = 2 * self.slots()
        todo = iter(tasks)

        def submit(task: Task) -> Any:
            # absolute: a worker's working directory is its own (its errors then name the file so too);
            # a URL (s3://...) is absolute already
            if "://" not in task.file:
                task = dataclasses.replace(task, file=os.path.abspath(task.file))
            return self.client.submit(self.on_worker.score_on_worker, job, task, self.evaluator,
                                      key=f"augury-{run_id}-{task.task_id}", pure=False)

        pending = distributed.as_completed([submit(t) for t in itertools.islice(todo, limit)],
                                         loop=self.client.loop)
        for future in pending:
            result: TaskResult = self._result(future)
            for task in itertools.islice(todo, 1):
                pending.add(submit(task))
            yield result

    def _result(self, future: Any) -> Any:
        try:
            return future.result()
        except AuguryError:
            raise
        except self._kill_errors as exc:
            raise BatchError(
                f"Dask workers died while scoring a task ({exc}); finished work is kept: rerun with "
                f"--resume to continue"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise BatchError(f"lost {self.address}: {exc}; finished work is kept: rerun with --resume "
                             f"to continue") from exc

    def close(self, wait: bool = True) -> None:
        """Cancel what is still queued and let go of the cluster (closing it only if this engine made it).
        Without `wait`, on a thread, while the run commits its output: closing a LocalCluster of 2
        workers took 1.1-1.9 s (BENCHMARKS.md, issue 12)."""
        client, self.client = getattr(self, "client", None), None
        cluster, self.cluster = self.cluster, None
        if client is not None or cluster is not None:
            self._closing = threading.Thread(target=_close, args=(client, cluster), name="augury-dask-close",
                                             daemon=True)
            self._closing.start()
        if wait and self._closing is not None:
            self._closing.join()


def _close(client: Any, cluster: Any) -> None:
    if client is not None:
        client.close()
    if cluster is not None:
        cluster.close()

