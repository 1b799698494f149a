"""A batch run's output on a local file system (a path, or a file:// URL): staged, committed by rename.

Work happens in a staging folder beside the output (`.<output name>.augury-run/`): one part file per task,
written by the worker that scored it and renamed into place when complete (`worker`). When every task is
done, for a file output the parts are merged, in input order, into a temporary file that replaces the
output in one rename; for a dataset the staging folder itself gets its manifest and is renamed into
place, with no merge. An interrupted run leaves the output as it was and the finished parts on disk; a
resumed run checks that the input, model and settings are the same and scores only the missing tasks.
A run holds a lock on its output (`exclusive`), so two runs never write one output at once.

`LocalOutput` has the steps `object_output.ObjectOutput` has for an object store (prepare, task_rows,
collect_errors, commit), so `runner.run_batch` drives either the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from augury.errors import BatchError

from . import dataset
from .errors_file import ErrorsFile
from .sources import Plan
from .worker import ERROR_SCHEMA, errors_path, part_path


def staging_dir(output: Path) -> Path:
    return output.parent / f".{output.name}.augury-run"


class LocalOutput:
    """The staging folder of local output `out` (a Parquet file, or a dataset folder if `to_dataset`)."""

    def __init__(self, out: Path, to_dataset: bool) -> None:
        self.out = out
        self.to_dataset = to_dataset
        self.staging = staging_dir(out)

    def prepare(self, fingerprint: dict[str, Any], plan: Plan, resume: bool,
                notes: list[str]) -> tuple[set[str], Plan]:
        """Create or reuse the staging folder; return the ids of the tasks already finished there, and the
        plan to cut the input by: a resumed run's own, recorded in its run.json (whatever --workers now)."""
        staging = self.staging
        run_file = staging / "run.json"
        if staging.exists() and resume:
            if not run_file.exists():
                raise BatchError(f"cannot resume: {staging} has no run.json; rerun without --resume")
            try:
                previous = orjson.loads(run_file.read_bytes())
                if not isinstance(previous, dict):
                    raise ValueError(f"it holds {type(previous).__name__}, not an object")
                recorded = Plan.from_dict(previous.pop("plan", None) or {})
            except (OSError, ValueError) as exc:  # (orjson.JSONDecodeError is a ValueError)
                raise BatchError(f"cannot resume: cannot read {run_file}: {exc}; rerun without --resume to "
                                 f"start over") from exc
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

    def task_rows(self, task_id: str) -> tuple[int, int]:
        """A finished task's rows (scored, in errors), from its files' footers: what a resumed run counts."""
        scored = pq.read_metadata(part_path(self.staging, task_id)).num_rows
        errors = errors_path(self.staging, task_id)
        return scored, pq.read_metadata(errors).num_rows if errors.exists() else 0

    def collect_errors(self, task_ids: Sequence[str], errors_file: str) -> int:
        """Gather every task's rejected rows into `errors_file` (JSON Lines), their `row` counted from the
        input's first row (the rows read before a task: its predecessors' scored rows and rejected rows,
        but not their unreadable lines, row -1); return how many there are."""
        staging = self.staging
        for tmp in staging.glob(".*.tmp"):  # an attempt killed mid-write, its task retried (Dask)
            tmp.unlink(missing_ok=True)
        before = 0
        with ErrorsFile(errors_file) as out:  # (a local path or a URL; written only if a row failed)
            for task_id in task_ids:
                path = errors_path(staging, task_id)
                rows = pq.read_table(path, schema=ERROR_SCHEMA).to_pylist() if path.exists() else []
                for row in rows:
                    if row["row"] >= 0:
                        row["row"] += before
                    out.write(orjson.dumps(row) + b"\n")
                before += pq.read_metadata(part_path(staging, task_id)).num_rows
                before += sum(1 for row in rows if row["row"] >= 0)
        return out.count

    def commit(self, task_ids: Sequence[str], fingerprint: dict[str, Any]) -> int:
        """Write the output: the dataset (`_commit_dataset`) or the merged file (`_merge`, then the staging
        folder goes). Returns the rows written."""
        if self.to_dataset:
            return _commit_dataset(self.staging, task_ids, self.out, fingerprint)
        rows = _merge(self.staging, task_ids, self.out)
        shutil.rmtree(self.staging, ignore_errors=True)
        return rows

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold a lock for `out` while a run writes it: a second run on the same output fails at once.

        A POSIX record lock (lockf) on `.<output name>.augury-lock`: it belongs to this process alone, so
        forked workers do not inherit it, and the kernel releases it when the process dies, however it dies.
        The file is removed when the run ends, by success or failure, while the lock is still held; a run
        that locked the file just as the run before removed it finds that the name no longer leads to the
        file it locked, and locks the one there now. A killed run leaves the file, unlocked: the next run
        takes it and removes it."""
        out = self.out
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
                raise BatchError(f"another augury batch run is writing {out}; wait for it or stop it"
                                 ) from None
            os.close(fd)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)
            os.close(fd)


def _commit_dataset(staging: Path, task_ids: Sequence[str], out: Path, fingerprint: dict[str, Any]) -> int:
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


def _merge(staging: Path, task_ids: Sequence[str], out: Path) -> int:
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
