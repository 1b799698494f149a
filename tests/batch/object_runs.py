"""Helpers for the object-store output's tests: a run's fingerprint and plan, a part uploaded as a
worker uploads it, and what a dataset's prefix and manifest hold."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from augury.batch import location as loc
from augury.batch.dataset import read_manifest
from augury.batch.object_attempt import PartUpload
from augury.batch.sources import Plan

FINGERPRINT = {"input": [{"path": "s3://b/in.parquet", "size": 10}], "model_version": "1"}
PLAN = Plan(task_rows=100)


def names(url: str) -> list[str]:
    prefix = loc.filesystem(url)[1] + "/"
    return sorted(f.path[len(prefix):] for f in loc.listing(url))


def uploaded(staging: str, task_id: str, rows: int, errors: pa.Table | None = None) -> PartUpload:
    """A task's attempt, done as a worker does it: the part streamed, then committed."""
    upload = PartUpload(staging, task_id)
    with pq.ParquetWriter(upload.open(), pa.schema([("value", pa.float64())])) as writer:
        writer.write_table(pa.table({"value": pa.array(range(rows), pa.float64())}))
    upload.commit(rows, errors)
    return upload


def manifest_parts(url: str) -> list[str]:
    return [p.name for p in read_manifest(url).parts]  # (InputError if a part it lists is missing)
