"""Scoring one task: read its rows, conform them, key them, predict, and write one part file atomically.

A task's part file appears (by rename) only once all its rows are scored, so its existence is the
checkpoint: a resumed run skips exactly the tasks whose part is on disk, and every input row ends up in
exactly one part or one errors part (DESIGN.md, invariant 7). The errors part is renamed into place before
the part, so a task with a part always has its errors recorded. Its `row` numbers count from the task's
first row (a worker of a text range cannot know how many rows came before it); the driver adds the rows
of the tasks before when it gathers the errors file.

When the staging location is on an object store (a URL), which has no rename, the part is uploaded under
a name of the attempt's own and a commit marker written after it says the task is done
(`object_attempt.PartUpload`).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from augury.errors import PredictionError
from augury.keys import column_keys, feature_keys
from augury.models.base import Model, ModelInfo, predict_checked
from augury.schema import RowError, conform
from augury.store.base import FEATURES_KEY_COLUMN

from .location import is_url
from .object_attempt import PartUpload
from .readers import read_task
from .sources import Task

ERROR_SCHEMA = pa.schema(
    [("row", pa.int64()), ("file", pa.string()), ("key", pa.string()), ("reason", pa.string())]
)


@dataclass(frozen=True)
class Job:
    """What every worker needs to know about the run (picklable: it crosses process boundaries)."""

    model_ref: str
    model_name: str | None
    key_columns: tuple[str, ...]
    columns: tuple[str, ...]
    chunk_rows: int
    staging: str
    metadata: bytes
    #: the evaluator the run decided on (`ModelInfo.evaluator`, as the engine's workers loaded the model);
    #: a worker whose own decision differs refuses to score.
    evaluator: str
    #: the model's version as the run recorded it; a worker that loaded another refuses to score.
    model_version: str = ""


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    rows: int
    scored: int
    failed: int
    first_error: str | None


def part_path(staging: str | Path, task_id: str) -> Path:
    return Path(staging) / f"part-{task_id}.parquet"


def errors_path(staging: str | Path, task_id: str) -> Path:
    return Path(staging) / f"errors-{task_id}.parquet"


def output_schema(model: Model, source_schema: pa.Schema | None, job: Job) -> pa.Schema:
    """Key column(s) (then `features_key` with key columns), the model's output columns, `model_version`,
    `computed_at`; with run metadata."""
    if job.key_columns:
        assert source_schema is not None
        key_fields = [*(source_schema.field(c) for c in job.key_columns),
                      pa.field(FEATURES_KEY_COLUMN, pa.string())]
    else:
        key_fields = [pa.field("key", pa.string())]
    fields = [
        *key_fields,
        *model.info.outputs.to_arrow(),
        pa.field("model_version", pa.string()),
        pa.field("computed_at", pa.timestamp("us", tz="UTC")),
    ]
    return pa.schema(fields, metadata={b"augury": job.metadata})


def score_task(model: Model, task: Task, job: Job) -> TaskResult:
    schema = model.info.inputs
    errors: list[dict[str, object]] = []
    unreadable: list[RowError] = []
    part, tmp = (
        part_path(job.staging, task.task_id),
        # unique per attempt: a task retried elsewhere (Dask) may share a process id on another machine
        Path(job.staging) / f".part-{task.task_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp",
    )
    upload = PartUpload(job.staging, task.task_id) if is_url(job.staging) else None
    writer: pq.ParquetWriter | None = None
    scored = 0
    first_row = 0  # of the chunk, counted from the task's first row
    try:
        for batch in read_task(task, list(job.columns), job.chunk_rows, unreadable):
            conformed = conform(batch, schema)
            bad_keys = _keys_of(batch, [e.index for e in conformed.errors], job.key_columns)
            for e, key in zip(conformed.errors, bad_keys, strict=True):
                errors.append(
                    {"row": first_row + e.index, "file": task.file, "key": key, "reason": e.reason}
                )
            good = batch.take(pa.array(conformed.indices)) if conformed.errors else batch
            hashes = feature_keys(conformed.batch, schema)
            if job.key_columns:
                keyed, key_errors = _user_keys(good, job.key_columns)
                keys = column_keys(good, list(job.key_columns))
            else:
                keyed, key_errors = np.ones(good.num_rows, dtype=bool), {}
                keys = hashes
            preds, failed = _predict_isolating(model, conformed.batch)
            ok = keyed.copy()
            ok[list(failed)] = False
            for j in np.flatnonzero(~ok):
                reason = key_errors[int(j)] if not keyed[j] else failed[int(j)]
                errors.append(
                    {
                        "row": first_row + int(conformed.indices[j]),
                        "file": task.file,
                        "key": keys[j].as_py() if keyed[j] else None,
                        "reason": reason,
                    }
                )
            if not ok.all():
                mask = pa.array(ok)
                good, keys, preds = good.filter(mask), keys.filter(mask), preds.filter(mask)
                hashes = hashes.filter(mask)
            n = good.num_rows
            key_cols = [*(good.column(c) for c in job.key_columns), hashes] if job.key_columns else [keys]
            now_us = int(time.time() * 1_000_000)
            out_schema = output_schema(model, batch.schema if job.key_columns else None, job)
            out = pa.RecordBatch.from_arrays(
                [
                    *key_cols,
                    *preds.columns,
                    pa.repeat(pa.scalar(model.info.version, pa.string()), n),
                    pa.array(np.full(n, now_us, dtype="datetime64[us]")).cast(pa.timestamp("us", tz="UTC")),
                ],
                schema=out_schema,
            )
            if writer is None:
                writer = pq.ParquetWriter(upload.open() if upload is not None else tmp, out_schema)
            writer.write_batch(out)
            scored += n
            first_row += batch.num_rows
        errors.extend({"row": e.index, "file": task.file, "key": None, "reason": e.reason}
                      for e in unreadable)
        if writer is None and upload is None:  # no rows at all: an empty part still marks the task done
            pq.write_table(pa.table({}), tmp)
        elif writer is not None:
            writer.close()
            writer = None
        if upload is not None:
            upload.commit(scored, pa.Table.from_pylist(errors, schema=ERROR_SCHEMA) if errors else None)
        else:
            _write_errors(errors, errors_path(job.staging, task.task_id))
            os.replace(tmp, part)
    finally:
        if writer is not None:
            writer.close()
        if upload is not None:
            upload.abort()
        else:
            tmp.unlink(missing_ok=True)
    return TaskResult(
        task.task_id,
        first_row + len(unreadable),
        scored,
        len(errors),
        str(errors[0]["reason"]) if errors else None,
    )


def _keys_of(batch: pa.RecordBatch, rows: list[int], key_columns: tuple[str, ...]) -> list[str | None]:
    """The keys of `rows` of `batch` from the key columns, for the errors file (None where a key column is
    empty, and for every row without key columns: a feature hash needs features that fit the schema)."""
    if not rows or not key_columns:
        return [None] * len(rows)
    picked = batch.take(pa.array(rows, pa.int64()))
    keyed, _ = _user_keys(picked, key_columns)
    keys = column_keys(picked, list(key_columns))
    return [keys[j].as_py() if keyed[j] else None for j in range(len(rows))]


def _user_keys(batch: pa.RecordBatch, key_columns: tuple[str, ...]) -> tuple[np.ndarray, dict[int, str]]:
    ok = np.ones(batch.num_rows, dtype=bool)
    reasons: dict[int, str] = {}
    for c in key_columns:
        col = batch.column(c)
        if col.null_count:
            nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
            for j in np.flatnonzero(nulls & ok):
                reasons[int(j)] = f"key column {c!r} is missing"
            ok &= ~nulls
    return ok, reasons


def _predict_isolating(model: Model, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, dict[int, str]]:
    """Predict `batch`; if the model fails, bisect to find the rows it fails on. Returns the predictions
    (null placeholders where it failed) and the failed rows' indices with the model's error."""
    if batch.num_rows == 0:
        return predict_empty(model), {}
    try:
        return predict_checked(model, batch), {}
    except PredictionError as exc:
        if batch.num_rows == 1:
            return _placeholder(model, 1), {0: str(exc)}
    half = batch.num_rows // 2
    left, left_failed = _predict_isolating(model, batch.slice(0, half))
    right, right_failed = _predict_isolating(model, batch.slice(half))
    table = pa.Table.from_batches([left, right]).combine_chunks()
    return table.to_batches()[0], {**left_failed, **{half + j: r for j, r in right_failed.items()}}


def predict_empty(model: Model) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=model.info.outputs.to_arrow())


def _placeholder(model: Model, n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.nulls(n, f.arrow_type) for f in model.info.outputs.fields], schema=model.info.outputs.to_arrow()
    )


def _write_errors(errors: list[dict[str, object]], path: Path) -> None:
    if not errors:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(pa.Table.from_pylist(errors, schema=ERROR_SCHEMA), tmp)
    os.replace(tmp, path)


def run_metadata(info: ModelInfo, key_columns: tuple[str, ...],
                 input_files: list[dict[str, object]] | None = None) -> bytes:
    """The ``augury`` metadata of a run's output: the model, the keys and, with `input_files` (the
    source's `fingerprint`: each file's path, size and modification time), what was scored, so that
    `augury publish` can profile the inputs while they are unchanged (`verify.inputs.recorded_inputs`)."""
    meta: dict[str, object] = {
        "model": info.to_dict(),
        "key_columns": list(key_columns) or ["key"],
        "key_kind": "columns" if key_columns else "hash",
    }
    if input_files:
        meta["input"] = input_files
    return orjson.dumps(meta)
