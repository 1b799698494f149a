"""One attempt at a task of an object-store run (`object_output`): its names, its upload, its marker.

A worker's attempt writes its part under a name of its own, ``part-<task>-<run><attempt>.parquet``, then
its rejected rows, then the commit marker ``_augury-run/<run>/done-<task>-<attempt>.json`` naming them
(`PartUpload`); the driver reads the markers back (`read_marker`). The marker's format has its writer
and its reader here, side by side.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from augury.errors import BatchError

from . import location
from .location import filesystem, join

#: the folder, inside the dataset's prefix, of a run's state (a name starting with `_`: never a part).
RUN_FOLDER = "_augury-run"


def staging_of(dataset_url: str, run_id: str) -> str:
    """Where the run `run_id` of the dataset at `dataset_url` keeps its markers and errors."""
    return join(dataset_url, f"{RUN_FOLDER}/{run_id}")


def dataset_of(staging: str) -> tuple[str, str]:
    """(the dataset's URL, the run id) of a run's staging URL (`staging_of`)."""
    dataset_url, folder, run_id = staging.rstrip("/").rsplit("/", 2)
    if folder != RUN_FOLDER:
        raise BatchError(f"{staging} is not a run's staging location on an object store")
    return dataset_url, run_id


@dataclass(frozen=True)
class Marker:
    """One finished attempt of a task: its part (None: no row scored), rows scored, errors part and count."""

    task_id: str
    attempt: str
    part: str | None
    scored: int
    errors: str | None
    failed: int


class PartUpload:
    """A worker's attempt at one task on an object store: the part's stream, then `commit` (errors, then
    the marker) or `abort` (the partial part removed, best effort)."""

    def __init__(self, staging: str, task_id: str) -> None:
        self.staging, self.task_id = staging, task_id
        dataset_url, run_id = dataset_of(staging)
        self.attempt = uuid.uuid4().hex[:8]
        self.part = f"part-{task_id}-{run_id}{self.attempt}.parquet"
        self.url = join(dataset_url, self.part)
        self.stream: Any = None
        self.done = False

    def open(self) -> Any:
        fs, path = filesystem(self.url)
        try:
            self.stream = fs.open_output_stream(path)
        except (OSError, pa.ArrowException) as exc:
            raise upload_failed(self.url, exc) from exc
        return self.stream

    def commit(self, scored: int, errors: pa.Table | None) -> None:
        """The part is written (its writer closed): complete its upload, then the errors, then the marker.
        A failure is a BatchError: the task has no marker, so a resumed run scores it again."""
        try:
            self._commit(scored, errors)
        except (OSError, pa.ArrowException) as exc:
            raise upload_failed(self.url, exc) from exc

    def _commit(self, scored: int, errors: pa.Table | None) -> None:
        if self.stream is not None:
            self.stream.close()  # the upload completes: the part appears, whole
        errors_name = None
        if errors is not None and errors.num_rows:
            errors_name = f"errors-{self.task_id}-{self.attempt}.parquet"
            fs, path = filesystem(join(self.staging, errors_name))
            pq.write_table(errors, path, filesystem=fs)
        marker = {"part": self.part if self.stream is not None else None, "scored": scored,
                  "errors": errors_name, "failed": errors.num_rows if errors is not None else 0}
        location.write_bytes(join(self.staging, f"done-{self.task_id}-{self.attempt}.json"),
                             orjson.dumps(marker))
        self.done = True

    def abort(self) -> None:
        if self.done or self.stream is None:
            return
        try:
            self.stream.close()  # (there is no way to abandon an upload: it completes, and goes)
            fs, path = filesystem(self.url)
            fs.delete_file(path)
        except (OSError, pa.ArrowException):
            pass  # never read (no marker names it); the run's commit removes it


def read_marker(staging: str, name: str) -> Marker:
    """The marker `name` (``done-<task>-<attempt>.json``) in the run's folder `staging`; BatchError naming
    it when it cannot be read."""
    task_id, attempt = name[len("done-"):-len(".json")].rsplit("-", 1)
    url = join(staging, name)
    try:
        doc = orjson.loads(location.read_bytes(url))
        return Marker(task_id, attempt, doc["part"], int(doc["scored"]), doc["errors"], int(doc["failed"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BatchError(f"cannot read the commit marker {url}: {exc}") from exc


def upload_failed(url: str, exc: Exception) -> BatchError:
    return BatchError(f"cannot write {url}: {exc}; finished tasks are kept: rerun with --resume to continue")


def run_of(part: str) -> str | None:
    """The run id in a part's name written to an object store (`PartUpload`); None for another name."""
    token = part[: -len(".parquet")].rsplit("-", 1)[-1]
    return token[:8] if len(token) == 16 else None
