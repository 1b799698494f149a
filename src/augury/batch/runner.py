"""`run_batch`: score every row of an input with a model, exactly once, into one Parquet file or a
prediction dataset (a folder: `augury.batch.dataset`).

Work happens in a staging folder beside the output (`.<output name>.augury-run/`): one part file per task,
written by the worker that scored it and renamed into place when complete. When every task is done, for a
file output the parts are merged, in input order, into a temporary file that replaces the output in one
rename; for a dataset the staging folder itself gets its manifest and is renamed into place, with no merge.
An interrupted run leaves the output as it was and the finished parts on disk; `resume=True` checks that
the input, model and settings are the same and scores only the missing tasks.

A dataset on an object store (a URL), where nothing can be renamed, is committed by its manifest instead:
`object_output.ObjectOutput` takes the staging folder's part (start or resume, errors, commit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from augury.errors import BatchError, InputError, TooManyBadRows
from augury.models.base import ModelInfo
from augury.models.evaluator import DEFAULT as DEFAULT_EVALUATOR
from augury.models.evaluator import check_choice
from augury.store.base import FEATURES_KEY_COLUMN

from . import dataset
from .engine import Engine, make_engine
from .location import is_url, normalize
from .object_output import ObjectOutput
from .sources import Plan, Source, Task, open_source
from .worker import ERROR_SCHEMA, Job, TaskResult, errors_path, part_path, run_metadata


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
    errors_path: Path | None = None
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


def staging_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.augury-run"


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
    if remote is not None:
        remote.check_replaceable()
    elif not to_dataset and out.suffix.lower() not in (".parquet", ".pq"):
        raise InputError(f"output {out} must be a .parquet file, or a folder for a dataset (ending in /)")
    elif not out.parent.exists():
        raise InputError(f"output folder {out.parent} does not exist")
    elif to_dataset:
        dataset.check_replaceable(out)
    if options.chunk_rows < 1:
        raise InputError("--chunk-rows must be at least 1")
    workers = options.workers or os.cpu_count() or 1
    choice = check_choice(options.evaluator)
    engine = make_engine(options.engine, model_ref, options.model_name, choice, workers, options.scheduler)
    try:
        with _exclusive(out) if remote is None else contextlib.nullcontext():
            info = engine.model_info()
            workers = engine.slots()  # an existing Dask cluster's threads, not this machine's cores
            keys = tuple(options.key_columns)
            _check_keys(info, keys)
            columns = tuple(dict.fromkeys([*keys, *info.inputs.names]))
            source = open_source(input_path, columns, options.chunk_rows)
            staging = staging_dir(out)
            job = Job(model_ref, options.model_name, keys, columns, options.chunk_rows,
                      str(staging.resolve()), run_metadata(info, keys, source.fingerprint()), info.evaluator,
                      info.version)
            notes: list[str] = []
            fingerprint = _fingerprint(source, job, info.version)
            planned = source.plan(workers)
            planned = Plan(options.task_rows or planned.task_rows, options.task_bytes or planned.task_bytes)
            if remote is not None:
                done, plan = remote.prepare(fingerprint, planned, options.resume, notes)
                job = dataclasses.replace(job, staging=remote.staging)
                task_rows = remote.task_rows
            else:
                done, plan = _prepare_staging(staging, fingerprint, planned, options.resume, notes)
                task_rows = functools.partial(_task_rows, staging)
            total, resumed, task_ids = _score(engine, job, source, plan, done, started, on_progress,
                                              task_rows)
            errors_file: Path | str
            if remote is not None:
                errors_file = options.errors_path or remote.url + ".errors.jsonl"
                failed = remote.collect_errors(task_ids, str(errors_file))
            else:
                for tmp in staging.glob(".*.tmp"):  # an attempt killed mid-write, its task retried (Dask)
                    tmp.unlink(missing_ok=True)
                errors_file = options.errors_path or out.with_name(out.stem + ".errors.jsonl")
                failed = _collect_errors(staging, task_ids, errors_file)
            if total == 0:
                raise InputError("the input has no rows")
            if failed / total > options.max_error_rate:
                raise TooManyBadRows(
                    f"{failed} of {total} rows ({failed / total:.2%}) could not be scored, more than the "
                    f"allowed {options.max_error_rate:.2%}; reasons are in {errors_file}; "
                    f"the output was not written (to accept them, rerun with --resume and a higher "
                    f"--max-error-rate)"
                )
            if remote is not None:
                scored = remote.commit(task_ids, {**fingerprint, "plan": plan.to_dict()})
            elif to_dataset:
                scored = _commit_dataset(staging, task_ids, out, {**fingerprint, "plan": plan.to_dict()})
            else:
                scored = _merge(staging, task_ids, out)
                shutil.rmtree(staging, ignore_errors=True)
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


def _check_keys(info: ModelInfo, keys: tuple[str, ...]) -> None:
    written = ("model_version", "computed_at", FEATURES_KEY_COLUMN)
    overlap = [k for k in keys if k in info.outputs.names or k in written]
    if overlap:
        raise InputError(f"key column(s) {', '.join(overlap)} clash with output columns")
    if keys and FEATURES_KEY_COLUMN in info.outputs.names:
        raise InputError(f"the model has an output called {FEATURES_KEY_COLUMN!r}, the column where a run "
                         f"with --key writes each row's feature hash; run without --key")


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold a lock for `out` while a run writes it: a second run on the same output fails at once.

    A POSIX record lock (lockf) on `.<output name>.augury-lock`: it belongs to this process alone, so
    forked workers do not inherit it, and the kernel releases it when the process dies, however it dies.
    The file is removed when the run ends, by success or failure, while the lock is still held; a run
    that locked the file just as the run before removed it finds that the name no longer leads to the
    file it locked, and locks the one there now. A killed run leaves the file, unlocked: the next run
    takes it and removes it."""
    lock = out.with_name(f".{out.name}.augury-lock")
    while True:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass  # removed by the run that held it, after we opened it: open the name again
        except OSError:
            os.close(fd)
            raise BatchError(f"another augury batch run is writing {out}; wait for it or stop it") from None
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


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


def _task_rows(staging: Path, task_id: str) -> tuple[int, int]:
    """A finished task's rows (scored, in errors), from its files' footers: what a resumed run counts."""
    scored = pq.read_metadata(part_path(staging, task_id)).num_rows
    errors = errors_path(staging, task_id)
    return scored, pq.read_metadata(errors).num_rows if errors.exists() else 0


def _prepare_staging(staging: Path, fingerprint: dict[str, Any], plan: Plan, resume: bool,
                     notes: list[str]) -> tuple[set[str], Plan]:
    """Create or reuse the staging folder; return the ids of the tasks already finished there, and the
    plan to cut the input by: a resumed run's own, recorded in its run.json (whatever --workers now)."""
    run_file = staging / "run.json"
    if staging.exists() and resume:
        if not run_file.exists():
            raise BatchError(f"cannot resume: {staging} has no run.json; rerun without --resume")
        previous = orjson.loads(run_file.read_bytes())
        recorded = Plan.from_dict(previous.pop("plan", None) or {})
        if previous != fingerprint:
            changed = [k for k in fingerprint if previous.get(k) != fingerprint[k]]
            raise BatchError(
                f"cannot resume: the {', '.join(changed)} changed since the interrupted run; "
                f"rerun without --resume to start over"
            )
        for tmp in staging.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        return {p.name[len("part-") : -len(".parquet")] for p in staging.glob("part-*.parquet")}, recorded
    if staging.exists():
        finished = len(list(staging.glob("part-*.parquet")))
        notes.append(
            f"discarded an interrupted run's {finished} finished task(s); pass --resume to continue one"
        )
        shutil.rmtree(staging)
    elif resume:
        notes.append("nothing to resume: starting a new run")
    staging.mkdir(parents=True)
    tmp = staging / ".run.json.tmp"
    tmp.write_bytes(orjson.dumps({**fingerprint, "plan": plan.to_dict()}))
    os.replace(tmp, run_file)
    return set(), plan


def _collect_errors(staging: Path, task_ids: list[str], errors_file: Path) -> int:
    """Gather every task's rejected rows into `errors_file` (JSON Lines), their `row` counted from the
    input's first row (the rows read before a task: its predecessors' scored rows and rejected rows, but
    not their unreadable lines, row -1); return how many there are."""
    count = before = 0
    tmp = errors_file.with_name(f".{errors_file.name}.tmp")
    with open(tmp, "wb") as fh:
        for task_id in task_ids:
            path = errors_path(staging, task_id)
            rows = pq.read_table(path, schema=ERROR_SCHEMA).to_pylist() if path.exists() else []
            for row in rows:
                if row["row"] >= 0:
                    row["row"] += before
                fh.write(orjson.dumps(row) + b"\n")
                count += 1
            before += pq.read_metadata(part_path(staging, task_id)).num_rows
            before += sum(1 for row in rows if row["row"] >= 0)
    if count:
        os.replace(tmp, errors_file)
    else:
        tmp.unlink()
        errors_file.unlink(missing_ok=True)
    return count


def _commit_dataset(staging: Path, task_ids: list[str], out: Path, fingerprint: dict[str, Any]) -> int:
    """Turn the staging folder into the dataset `out`: the run's own files go (the errors were collected),
    the manifest is written, and the folder replaces `out` (renamed aside, then removed). Returns the rows.

    Between the two renames (microseconds) a crash leaves no `out`: the new dataset, complete, in the
    staging folder and the old one in `.<name>.augury-old/`."""
    for task_id in task_ids:
        errors_path(staging, task_id).unlink(missing_ok=True)
    (staging / "run.json").unlink(missing_ok=True)
    names = [part_path(staging, task_id).name for task_id in task_ids]
    try:
        manifest = dataset.commit(staging, names, fingerprint)
        old = out.with_name(f".{out.name}.augury-old")
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.rename(out, old)
        os.rename(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise BatchError(f"cannot write {out}: {exc}") from exc
    return manifest.rows


def _merge(staging: Path, task_ids: list[str], out: Path) -> int:
    """Concatenate the parts in input order into `out`, atomically. Returns the rows written."""
    tmp = out.with_name(f".{out.name}.augury-tmp")
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        for task_id in task_ids:
            pf = pq.ParquetFile(part_path(staging, task_id))
            if pf.metadata.num_rows == 0 and pf.schema_arrow.names == []:
                continue
            if writer is None:
                writer = pq.ParquetWriter(tmp, pf.schema_arrow)
            for rg in range(pf.num_row_groups):
                table = pf.read_row_group(rg)
                writer.write_table(table.cast(writer.schema) if table.schema != writer.schema else table)
                rows += table.num_rows
        if writer is None:
            raise BatchError("no row of the input could be scored")
        writer.close()
        writer = None
        os.replace(tmp, out)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchError(f"cannot write {out}: {exc}") from exc
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return rows


__all__ = ["BatchOptions", "BatchResult", "Progress", "TaskResult", "run_batch", "staging_dir"]
