"""Reading predictions written by `augury batch`, streamed in bounded memory: one Parquet file, or a
prediction dataset folder (`augury.batch.dataset`: parts read in order, refused without its manifest).
`PredictionsFile` is the one opener: verify, publish and the command line read predictions through it.

The file is Parquet: the key column(s), the model's output columns, `model_version` and `computed_at`.
Its schema metadata `b"augury"` is JSON: `{"model": ModelInfo.to_dict(), "key_columns": [...],
"key_kind": "columns" | "hash"}`. Without that metadata the file is still read: every column except
`key`, `model_version` and `computed_at` is taken as an output, the task is guessed from the column names,
and `Layout.notes` says so. Any failure to open or read the file is an `InputError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from augury.batch import dataset, location
from augury.errors import ConfigError, InputError
from augury.keys import key_text
from augury.schema import Schema
from augury.store.base import COMPUTED_AT_COLUMN, KEY_COLUMN, MODEL_VERSION_COLUMN

#: rows per streamed batch: bounds memory whatever the file's size.
BATCH_ROWS = 65_536
METADATA_KEY = b"augury"
PROBA_PREFIX = "proba_"


@dataclass(frozen=True)
class Output:
    """One output column: `numeric` (int or float: `is_float`) or `categorical` (label, string, bool)."""

    name: str
    kind: str
    is_float: bool = False
    is_proba: bool = False


@dataclass(frozen=True)
class Layout:
    """What each column of a predictions file is, from its metadata (or guessed, see `notes`)."""

    outputs: tuple[Output, ...]
    key_columns: tuple[str, ...] = ()
    key_kind: str | None = None
    task: str = "other"
    classes: tuple[str, ...] = ()
    model: Mapping[str, Any] | None = None
    inputs: Schema | None = None
    missing: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    key_types: Mapping[str, pa.DataType] = field(default_factory=dict)
    #: the files the batch run scored, as it recorded them (path, size, mtime_ns; `batch.worker.run_metadata`)
    input_files: tuple[Mapping[str, Any], ...] = ()

    @property
    def proba(self) -> list[Output]:
        return [o for o in self.outputs if o.is_proba]

    @property
    def label(self) -> Output | None:
        return next((o for o in self.outputs if o.name == "label" and o.kind == "categorical"), None)


def layout_of(schema: pa.Schema, outputs: Sequence[str] | None = None) -> Layout:
    """The layout of a predictions file with Arrow `schema`; `outputs` overrides which columns are outputs."""
    meta = _metadata(schema)
    notes: list[str] = []
    names = schema.names
    model: Mapping[str, Any] | None = None
    inputs: Schema | None = None
    if meta is None:
        key_columns: tuple[str, ...] = (KEY_COLUMN,) if KEY_COLUMN in names else ()
        key_kind = None
        declared = [n for n in names if n not in (KEY_COLUMN, MODEL_VERSION_COLUMN, COMPUTED_AT_COLUMN)]
        task = _guess_task(declared)
        classes: tuple[str, ...] = ()
        notes.append("no augury metadata: not written by `augury batch`; output columns inferred as "
                     f"{', '.join(declared) or '(none)'}, task guessed as {task!r}")
    else:
        model = meta.get("model") or {}
        key_columns = tuple(str(c) for c in meta.get("key_columns") or ())
        key_kind = meta.get("key_kind")
        declared = [str(o["name"]) for o in model.get("outputs", ()) if isinstance(o, Mapping)]
        task = str(model.get("task") or _guess_task(declared))
        classes = tuple(key_text([c]) for c in model.get("classes") or ())
        try:
            inputs = Schema.from_list(model.get("inputs") or []) if model.get("inputs") else None
        except ConfigError as exc:
            notes.append(f"the metadata's input schema is unreadable ({exc}); golden rows cannot be hashed")
        if not declared:
            declared = [n for n in names if n not in (*key_columns, MODEL_VERSION_COLUMN, COMPUTED_AT_COLUMN)]
            notes.append(f"the metadata declares no outputs; using {', '.join(declared) or '(none)'}")
    if outputs is not None:
        declared = list(outputs)
    expected = [*key_columns, *declared] + ([MODEL_VERSION_COLUMN, COMPUTED_AT_COLUMN] if meta else [])
    missing = tuple(n for n in expected if n not in names)
    cols = tuple(_output(schema.field(n), task) for n in declared if n in names)
    key_types = {k: schema.field(k).type for k in key_columns if k in names}
    recorded = meta.get("input") if meta is not None else None
    input_files = tuple(f for f in recorded if isinstance(f, Mapping)) if isinstance(recorded, list) else ()
    return Layout(cols, key_columns, key_kind, task, classes, model, inputs, missing, tuple(notes), key_types,
                  input_files)


def _metadata(schema: pa.Schema) -> dict[str, Any] | None:
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"the predictions file's augury metadata is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise InputError("the predictions file's augury metadata is not a JSON object")
    return meta


def _guess_task(outputs: Sequence[str]) -> str:
    if "label" in outputs and any(n.startswith(PROBA_PREFIX) for n in outputs):
        return "classification"
    if "value" in outputs:
        return "regression"
    return "other"


def _output(f: pa.Field, task: str) -> Output:
    t = f.type
    numeric = pa.types.is_integer(t) or pa.types.is_floating(t)
    if (f.name == "label" and task == "classification") or not numeric:
        return Output(f.name, "categorical")
    is_float = pa.types.is_floating(t)
    return Output(f.name, "numeric", is_float, is_float and task == "classification"
                  and f.name.startswith(PROBA_PREFIX))


class PredictionsFile:
    """Open predictions (a Parquet file or a dataset folder; local, or on an object store: a URL, `path`
    as it was given): their layout and a bounded-memory stream of their record batches."""

    def __init__(self, path: str | Path, outputs: Sequence[str] | None = None) -> None:
        self.path: Path | str = str(path) if location.is_url(path) else Path(path)
        self._file: pq.ParquetFile | None = None
        self._manifest: dataset.Manifest | None = None
        if isinstance(self.path, str):
            location.normalize(self.path, "predictions")  # an unknown scheme or missing package: one line
        elif not self.path.exists():
            raise InputError(f"predictions file not found: {self.path}")
        if dataset.is_dataset_path(self.path) if isinstance(self.path, str) else self.path.is_dir():
            self._manifest = dataset.read_manifest(self.path)
            self.schema: pa.Schema = self._manifest.schema
            self.num_rows: int = self._manifest.rows
        else:
            try:
                self._file = location.parquet_file(str(self.path), pre_buffer=False)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{self.path} is not a readable Parquet file: {exc}") from exc
            self.schema = self._file.schema_arrow
            self.num_rows = self._file.metadata.num_rows
        self.layout = layout_of(self.schema, outputs)

    def batches(self, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
        """Stream `columns` (those present) in batches of at most `BATCH_ROWS` rows."""
        wanted = [c for c in dict.fromkeys(columns) if c in self.schema.names]
        if self._manifest is not None:
            yield from dataset.part_batches(self.path, self._manifest, wanted, BATCH_ROWS)
            return
        assert self._file is not None
        try:
            yield from self._file.iter_batches(batch_size=BATCH_ROWS, columns=wanted, use_threads=True)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> PredictionsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def table_batches(table: pa.Table, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Stream `columns` of an in-memory table in batches of at most `BATCH_ROWS` rows."""
    wanted = [c for c in dict.fromkeys(columns) if c in table.schema.names]
    yield from table.select(wanted).to_batches(max_chunksize=BATCH_ROWS)
