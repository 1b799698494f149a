"""Profiles of a model's input features: the reference that live drift is measured against.

`profile_inputs` reads a data file (Parquet: a file or a folder of files; or CSV), casts each batch to the
model's input schema (`schema.conform`: the cast the batch run and the server apply, DESIGN.md invariant
1, so the reference describes the very values a request is cast to) and profiles every feature with
`ProfileBuilder`, the builder of prediction profiles: numeric features get decile bins, text and boolean
ones value shares, in the same `Profile` format (`Profile.to_dict`). Rows the cast rejects are left out,
as a batch run leaves them out of its predictions. Memory is bounded by the stream's batch size and the
builder's samples, whatever the file's size; `max_rows` bounds the time (the first rows are read: a
reference file is a sample already, e.g. a validation set).

The profile is stored with a published version under `INPUT_PROFILE_META` (not in its predictions'
profile, whose columns are outputs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from augury.errors import InputError, SchemaError
from augury.schema import Schema, conform
from augury.verify.profile import Profile, ProfileBuilder
from augury.verify.source import BATCH_ROWS, layout_of

#: where a published version keeps the profile of the input features it scored (in its `meta`).
INPUT_PROFILE_META = "input_profile"
#: rows read for a profile by default (a reference is a sample: more rows barely move its deciles).
MAX_ROWS = 1_000_000


def profile_inputs(path: str | Path | Sequence[Path], schema: Schema, max_rows: int = MAX_ROWS) -> Profile:
    """The profile of `schema`'s features in the Parquet or CSV data at `path` (or in several such files,
    in turn: a batch run's inputs; their first `max_rows` rows). A missing or unreadable file, or one that
    lacks a feature, is an `InputError`."""
    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    for one in paths:
        if not one.exists():
            raise InputError(f"reference data not found: {one}")
    builder = ProfileBuilder(layout_of(schema.to_arrow(), schema.names))
    left = max_rows
    for one in paths:
        try:
            for batch in data_batches(one, schema.names):
                if left <= 0:
                    break
                if batch.num_rows > left:
                    batch = batch.slice(0, left)
                left -= batch.num_rows
                builder.add(conform(batch, schema).batch)
        except SchemaError as exc:
            raise InputError(f"{one}: {exc}") from exc
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"cannot read {one}: {exc}") from exc
    return builder.finish()


def recorded_inputs(files: Sequence[Mapping[str, Any]]) -> list[Path] | str:
    """The files a batch run scored, as its output recorded them (`Layout.input_files`: path, size and
    modification time), if every one is still there unchanged and can be profiled (Parquet or CSV); else
    why not, in words. So `augury publish` profiles the very data the predictions came from, and never a
    file rewritten since (its profile would describe other data)."""
    paths: list[Path] = []
    for recorded in files:
        if "://" in str(recorded.get("path", "")):
            return (f"the batch run's input {recorded['path']} is on an object store (only local data is "
                    f"profiled)")
        path = Path(str(recorded.get("path", "")))
        try:
            stat = path.stat()
        except OSError:
            return f"the batch run's input {path} is no longer there"
        if stat.st_size != recorded.get("size") or stat.st_mtime_ns != recorded.get("mtime_ns"):
            return f"the batch run's input {path} has changed since the run"
        if path.suffix.lower() not in (".parquet", ".pq", ".csv"):
            return f"the batch run's input {path.name} is neither Parquet nor CSV"
        paths.append(path)
    return paths or "the predictions do not name the data they were scored from"


def data_batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """`columns` of the data at `path`, streamed (a missing column: SchemaError, as `conform` says)."""
    if path.suffix.lower() == ".csv":
        reader = pacsv.open_csv(path)
        _check_columns(reader.schema.names, columns)
        for batch in reader:
            yield batch.select(columns)
        return
    if path.is_file() and path.suffix.lower() not in (".parquet", ".pq"):
        raise InputError(f"reference data must be Parquet (a file or a folder) or CSV, not {path.name}")
    import pyarrow.dataset as pads  # (here: importing it imports pandas, which `import augury` must not)

    data = pads.dataset(path, format="parquet")
    _check_columns(data.schema.names, columns)
    yield from data.to_batches(columns=columns, batch_size=BATCH_ROWS)


def _check_columns(names: list[str], columns: list[str]) -> None:
    missing = [c for c in columns if c not in names]
    if missing:
        raise SchemaError(f"missing feature column(s): {', '.join(missing)} "
                          f"(the model expects {', '.join(columns)})")
