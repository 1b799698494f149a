"""A prediction dataset: a folder of Parquet part files, one per task, and a manifest that makes it whole.

`augury batch ... -o preds/` writes one: each worker writes the part of the task it scored, and no process
merges them. The manifest, `_manifest.json`, is written last: it lists every part in input order with
its row count, the run's fingerprint (input, model version, evaluator, settings) and the parts' Arrow
schema. A folder without it is an incomplete dataset (a run that did not finish, a partial copy) and is
refused by every reader (`read_manifest`), so a reader sees a whole dataset or none.

Locally the folder is built in the run's staging folder and renamed into place when its manifest is
written (`runner`), so until a run completes the output stays as it was (invariant 7). Names starting
with `.` or `_` are not parts, so a dataset folder is also a valid `augury batch` input folder.

On an object store (a URL: `location`) there is no rename: each task attempt writes its part under a name
of its own and the manifest, one object written in one request, is the commit (`object_output`). Readers
read only the parts the manifest lists, so a part a retried task left beside them is never read.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augury.errors import BatchError, InputError

from . import location
from .location import is_url

MANIFEST = "_manifest.json"
KIND = "augury-prediction-dataset"
VERSION = 1


@dataclass(frozen=True)
class Part:
    """One part file of a dataset: its name inside the folder and its row count."""

    name: str
    rows: int


@dataclass(frozen=True)
class Manifest:
    """What a complete dataset holds: its parts in input order, their schema, and the run that wrote them."""

    parts: tuple[Part, ...]
    schema: pa.Schema
    fingerprint: dict[str, Any]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "kind": KIND,
                "version": VERSION,
                "rows": self.rows,
                "parts": [{"name": p.name, "rows": p.rows} for p in self.parts],
                "columns": [{"name": f.name, "type": str(f.type)} for f in self.schema],
                "schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode(),
                "fingerprint": self.fingerprint,
            },
            option=orjson.OPT_INDENT_2,
        )


def is_dataset_path(path: str | os.PathLike[str]) -> bool:
    """Whether an output path names a dataset folder: an existing folder, a path ending in a separator, or
    a name without a suffix (anything else, e.g. `preds.parquet`, is one file)."""
    text = os.fspath(path)
    if is_url(text):
        return (text.endswith("/") or os.path.splitext(text)[1] == ""
                or location.info(text).type == pafs.FileType.Directory)
    p = Path(text)
    return p.is_dir() or text.endswith(("/", os.sep)) or p.suffix == ""


def check_replaceable(folder: Path) -> None:
    """A run may replace `folder` only if it is absent, empty, or a prediction dataset (complete or not):
    never a folder of other files."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError(f"output {folder} is a file; a dataset output must be a folder")
    others = [p.name for p in folder.iterdir() if p.name != MANIFEST and not is_part_name(p.name)]
    if others:
        raise InputError(f"output folder {folder} holds files that are not a prediction dataset's "
                         f"({', '.join(sorted(others)[:3])}); choose a new or empty folder")


def is_part_name(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def commit(folder: Path, names: Sequence[str], fingerprint: dict[str, Any]) -> Manifest:
    """Make `folder` a complete dataset of the part files `names` (in input order): parts without rows
    are removed, the others' footers give their row counts and schema, and the manifest is written last
    (a temporary file renamed into place). Raises BatchError when no part has a row."""
    parts: list[Part] = []
    schema: pa.Schema | None = None
    for name in names:
        meta = pq.read_metadata(folder / name)
        if meta.num_rows == 0:
            (folder / name).unlink()
            continue
        if schema is None:
            schema = meta.schema.to_arrow_schema()
        parts.append(Part(name, meta.num_rows))
    if schema is None:
        raise BatchError("no row of the input could be scored")
    manifest = Manifest(tuple(parts), schema, fingerprint)
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_bytes(manifest.to_json())
    os.replace(tmp, folder / MANIFEST)
    return manifest


def read_manifest(folder: Path | str) -> Manifest:
    """The manifest of the dataset `folder` (a local folder or an object-store URL); InputError, in one
    line, when there is none (the dataset is incomplete) or it does not match the folder's parts."""
    if isinstance(folder, str) and is_url(folder):
        return _read_remote_manifest(folder.rstrip("/"))
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists() and not any(is_part_name(p.name) for p in folder.iterdir()):
        raise InputError(f"{folder} is a directory, not a prediction dataset (it has no {MANIFEST}); pass "
                         f"a predictions Parquet file or a dataset folder written by augury batch")
    if not path.exists():
        raise InputError(f"{folder} is an incomplete prediction dataset: it has no {MANIFEST} (the run "
                         f"that wrote it did not finish); rerun augury batch, with --resume to continue it")
    manifest = parse_manifest(path.read_bytes, str(path))
    for part in manifest.parts:
        if "/" in part.name or part.name.startswith(".") or not (folder / part.name).is_file():
            raise InputError(f"{folder}: the part {part.name} its manifest lists is missing")
    return manifest


def _read_remote_manifest(folder: str) -> Manifest:
    """`read_manifest` on an object store: one listing of the prefix finds the manifest and the parts."""
    names = {f.path.rsplit("/", 1)[-1] for f in location.listing(folder, recursive=False)}
    if MANIFEST not in names:
        if not any(is_part_name(n) for n in names):
            raise InputError(f"{folder} is not a prediction dataset (it has no {MANIFEST}); pass a "
                             f"predictions Parquet file or a dataset written by augury batch")
        raise InputError(f"{folder} is an incomplete prediction dataset: it has no {MANIFEST} (the run "
                         f"that wrote it did not finish); rerun augury batch, with --resume to continue it")
    url = location.join(folder, MANIFEST)
    manifest = parse_manifest(lambda: location.read_bytes(url), url)
    for part in manifest.parts:
        if "/" in part.name or part.name.startswith(".") or part.name not in names:
            raise InputError(f"{folder}: the part {part.name} its manifest lists is missing")
    return manifest


def parse_manifest(read: Callable[[], bytes], path: str) -> Manifest:
    """The manifest in the bytes `read` returns; InputError naming `path` when they are not one."""
    try:
        doc = orjson.loads(read())
        if not isinstance(doc, dict):
            raise ValueError(f"it holds {type(doc).__name__}, not an object")
        if doc.get("kind") != KIND:
            raise ValueError(f"kind {doc.get('kind')!r}, expected {KIND!r}")
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(doc["schema"])))
        parts = tuple(Part(str(p["name"]), int(p["rows"])) for p in doc["parts"])
        fingerprint = dict(doc.get("fingerprint") or {})
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable prediction dataset manifest: {exc}") from exc
    return Manifest(parts, schema, fingerprint)


def part_batches(folder: Path | str, manifest: Manifest, columns: Sequence[str],
                 batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream `columns` of every part in order, in batches of at most `batch_rows` rows, cast to the
    manifest's schema where a part's differs (key columns read from input files of other types)."""
    wanted = pa.schema([manifest.schema.field(c) for c in columns])
    for part in manifest.parts:
        path = location.join(str(folder), part.name)
        try:
            pf = location.parquet_file(path, pre_buffer=False)
            if pf.metadata.num_rows != part.rows:
                raise InputError(f"{path} has {pf.metadata.num_rows} rows, its manifest says {part.rows}")
            for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns), use_threads=True):
                yield batch if batch.schema.equals(wanted) else batch.cast(wanted)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from exc
