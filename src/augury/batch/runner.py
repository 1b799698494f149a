"""`run_batch`: score every row of an input with a model, exactly once, into one Parquet file or a
prediction dataset (a folder: `augury.batch.dataset`).

The run plans tasks (`sources`), has an engine score them (`engine`: worker processes, threads or Dask),
each task's rows into a part written by the worker that scored it (`worker`), and commits the output once
every task is done: on a local file system through a staging folder renamed into place
(`local_output.LocalOutput`), on an object store, where nothing can be renamed, by a manifest listing
each task's one committed part (`object_output.ObjectOutput`). Both keep what finished when a run is
interrupted, so `resume=True` (after checking that the input, model and settings are the same) scores
only the missing tasks, and neither changes the previous output until the commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augury.errors import BatchError, InputError, TooManyBadRows
from augury.models.base import ModelInfo
from augury.models.evaluator import DEFAULT as DEFAULT_EVALUATOR
from augury.models.evaluator import check_choice
from augury.store.base import FEATURES_KEY_COLUMN

from . import dataset
from .engine import Engine, make_engine
from .local_output import LocalOutput, staging_dir
from .location import is_url, normalize
from .object_output import ObjectOutput
from .sources import Plan, Source, Task, open_source
from .worker import Job, TaskResult, run_metadata


@dataclass(frozen=True)
class BatchOptions:
    """Settings of a batch run; each has a default that suits a single machine."""

    key_columns: tuple[str, ...] = ()
    #: rows per chunk handed to the model; bounds memory per worker.
    chunk_rows: int = 32_768
    #: worker processes; None = every core.
    workers: int | None = None
    #: continue an interrupted run instead of starting over.
    resume: bool = False
    #: the run fails when more than this share of rows cannot be scored.
    max_error_rate: float = 0.01
    #: where rows that cannot be scored are written (JSON Lines); default `<output>.errors.jsonl`.
    errors_path: str | os.PathLike[str] | None = None
    #: "auto" (= "processes": worker processes on this machine), "threads" (one process, less memory),
    #: "processes", "inline" or "dask" (a Dask cluster: `dask_engine`).
    engine: str = "auto"
    #: the Dask scheduler to run on (tcp://HOST:PORT), with engine "dask"; None: a LocalCluster of
    #: `workers` processes for the run.
    scheduler: str | None = None
    model_name: str | None = None
    #: rows per Parquet task / bytes per CSV or JSON Lines task; None: planned from the input and
    #: --workers (`Source.plan`). A resumed run keeps its own.
    task_rows: int | None = None
    task_bytes: int | None = None
    #: which code scores the model where it has two exact evaluators (`augury.models.evaluator`):
    #: "auto" (the default, the server's too), "compiled" or "library". Decided where the model is
    #: scored (the engine's workers, never a process pool's driver); the run metadata records it.
    evaluator: str = DEFAULT_EVALUATOR


@dataclass(frozen=True)
class Progress:
    rows_done: int
    rows_total: int | None
    rows_failed: int
    elapsed_s: float


@dataclass(frozen=True)
class BatchResult:
    #: a local path, or the URL of a dataset on an object store
    output: Path | str
    rows: int
    scored: int
    failed: int
    errors_path: Path | str | None
    model_name: str
    model_version: str
    seconds: float
    evaluator: str
    tasks: int
    resumed_tasks: int
    workers: int
    notes: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "rows": self.rows,
            "scored": self.scored,
            "failed": self.failed,
            "errors_path": str(self.errors_path) if self.errors_path else None,
            "model": self.model_name,
            "model_version": self.model_version,
            "evaluator": self.evaluator,
            "seconds": round(self.seconds, 3),
            "rows_per_s": round(self.rows_per_s, 1),
            "tasks": self.tasks,
            "resumed_tasks": self.resumed_tasks,
            "workers": self.workers,
            "notes": self.notes,
        }


def run_batch(
    model_ref: str,
    input_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: BatchOptions = BatchOptions(),
    on_progress: Callable[[Progress], None] | None = None,
) -> BatchResult:
    """Score `input_path` with the model at `model_ref` into `output`: a Parquet file (`.parquet`), or a
    prediction dataset folder (an existing folder, a path ending in `/`, or a name without a suffix).
    Both are local paths, file:// URLs or object-store URLs (`location`; there, a dataset only)."""
    started = time.perf_counter()
    input_path = normalize(input_path, "input")
    output = normalize(output, "output")
    remote = ObjectOutput(_object_dataset(output)) if is_url(output) else None
    out = Path(output)
    to_dataset = remote is not None or dataset.is_dataset_path(output)
    target: ObjectOutput | LocalOutput = remote if remote is not None else LocalOutput(out, to_dataset)
    if remote is not None:
        remote.check_replaceable()
    elif not to_dataset and out.suffix.lower() not in (".parquet", ".pq"):
        raise InputError(f"output {out} must be a .parquet file, or a folder for a dataset (ending in /)")
    elif not out.parent.exists():
        raise InputError(f"output folder {out.parent} does not exist")
    elif to_dataset:
        dataset.check_replaceable(out)
    errors_given = None if options.errors_path is None else _errors_location(options.errors_path)
    if options.chunk_rows < 1:
        raise InputError("--chunk-rows must be at least 1")
    workers = options.workers or os.cpu_count() or 1
    choice = check_choice(options.evaluator)
    engine = make_engine(options.engine, model_ref, options.model_name, choice, workers, options.scheduler,
                         may_fork=not (is_url(input_path) or remote is not None))
    try:
        with target.exclusive() if isinstance(target, LocalOutput) else contextlib.nullcontext():
            info = engine.model_info()
            workers = engine.slots()  # an existing Dask cluster's threads, not this machine's cores
            keys = tuple(options.key_columns)
            _check_keys(info, keys)
            columns = tuple(dict.fromkeys([*keys, *info.inputs.names]))
            source = open_source(input_path, columns, options.chunk_rows)
            job = Job(model_ref, options.model_name, keys, columns, options.chunk_rows,
                      str(staging_dir(out).resolve()), run_metadata(info, keys, source.fingerprint()),
                      info.evaluator, info.version)
            notes: list[str] = []
            fingerprint = _fingerprint(source, job, info.version)
            planned = source.plan(workers)
            planned = Plan(options.task_rows or planned.task_rows, options.task_bytes or planned.task_bytes)
            done, plan = target.prepare(fingerprint, planned, options.resume, notes)
            if remote is not None:
                job = dataclasses.replace(job, staging=remote.staging)
            total, resumed, task_ids = _score(engine, job, source, plan, done, started, on_progress,
                                              target.task_rows)
            errors_file: Path | str
            if errors_given is not None:
                errors_file = errors_given
            elif isinstance(target, ObjectOutput):
                errors_file = target.url + ".errors.jsonl"
            else:
                errors_file = out.with_name(out.stem + ".errors.jsonl")
            failed = target.collect_errors(task_ids, str(errors_file))
            if total == 0:
                raise InputError("the input has no rows")
            if failed / total > options.max_error_rate:
                raise TooManyBadRows(
                    f"{failed} of {total} rows ({failed / total:.2%}) could not be scored, more than the "
                    f"allowed {options.max_error_rate:.2%}; reasons are in {errors_file}; "
                    f"the output was not written (to accept them, rerun with --resume and a higher "
                    f"--max-error-rate)"
                )
            scored = target.commit(task_ids, {**fingerprint, "plan": plan.to_dict()})
    finally:
        engine.close()
    return BatchResult(
        out if remote is None else remote.url + "/",
        total,
        scored,
        failed,
        errors_file if failed else None,
        info.name,
        info.version,
        time.perf_counter() - started,
        info.evaluator,
        len(task_ids),
        resumed,
        workers,
        notes,
    )


def _object_dataset(url: str) -> str:
    """The dataset URL of an object-store output: a prefix inside a bucket, for a dataset (no rename, so
    no single file committed by one)."""
    if not dataset.is_dataset_path(url):
        raise InputError(f"output {url}: on an object store augury batch writes a prediction dataset (a URL "
                         f"ending in /), not one file")
    if url.rstrip("/").count("/") < 3:
        raise InputError(f"output {url}: name a prefix inside the bucket for the dataset "
                         f"({url.rstrip('/')}/preds/)")
    return url


def _errors_location(given: str | os.PathLike[str]) -> str:
    """`--errors` checked before any scoring: a URL, or a local path whose folder exists."""
    location = normalize(given, "--errors")
    if not is_url(location):
        folder = Path(location).parent
        if not folder.is_dir():
            raise InputError(f"--errors {location}: the folder {folder} does not exist")
    return location


def _check_keys(info: ModelInfo, keys: tuple[str, ...]) -> None:
    written = ("model_version", "computed_at", FEATURES_KEY_COLUMN)
    overlap = [k for k in keys if k in info.outputs.names or k in written]
    if overlap:
        raise InputError(f"key column(s) {', '.join(overlap)} clash with output columns")
    if keys and FEATURES_KEY_COLUMN in info.outputs.names:
        raise InputError(f"the model has an output called {FEATURES_KEY_COLUMN!r}, the column where a run "
                         f"with --key writes each row's feature hash; run without --key")


def _score(
    engine: Engine,
    job: Job,
    source: Source,
    plan: Plan,
    done: set[str],
    started: float,
    on_progress: Callable[[Progress], None] | None,
    task_rows: Callable[[str], tuple[int, int]],
) -> tuple[int, int, list[str]]:
    """Run every task not in `done` on `engine`; return (rows, tasks skipped as done, all task ids)."""
    rows = failed = resumed = 0
    task_ids: list[str] = []

    def todo() -> Iterator[Task]:
        nonlocal rows, resumed
        for task in source.tasks(plan):
            task_ids.append(task.task_id)
            if task.task_id in done:
                rows += sum(task_rows(task.task_id))
                resumed += 1
                continue
            yield task

    try:
        for result in engine.run(job, todo()):
            rows += result.rows
            failed += result.failed
            if on_progress:
                on_progress(Progress(rows, source.total_rows, failed, time.perf_counter() - started))
    except BrokenProcessPool as exc:
        raise BatchError(
            "a worker process died (out of memory, or killed); finished work is kept: "
            "rerun with --resume to continue"
        ) from exc
    finally:
        engine.close(wait=False)  # before the merge; run_batch's own close() waits for it
    return rows, resumed, task_ids


def _fingerprint(source: Source, job: Job, model_version: str) -> dict[str, Any]:
    return {
        "input": source.fingerprint(),
        "model_version": model_version,
        "evaluator": job.evaluator,
        "key_columns": list(job.key_columns),
        "chunk_rows": job.chunk_rows,
        # 2: with key columns, parts have a features_key column (a part of 1 would not merge); 3: errors
        # parts count rows from their task's first row, text inputs are cut into byte ranges
        "format": 3,
    }


__all__ = ["BatchOptions", "BatchResult", "Progress", "TaskResult", "run_batch", "staging_dir"]
