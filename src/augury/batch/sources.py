"""Inputs of a batch run, cut into deterministic tasks.

A task is the unit of work, of checkpointing and of exactly-once accounting: the same input and settings
always give the same tasks, with the same ids, in the same order. Parquet tasks are references (a file and
one row group) that a worker reads itself, so decoding runs in parallel and nothing large crosses a process
boundary. CSV and JSON Lines cannot be split safely by byte range, so they are read in order by the driver
and a task carries its rows; bad lines become row errors instead of failing the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from augury.errors import InputError
from augury.schema import RowError

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
#: the read buffer of a worker's Parquet stream (see `read_task`).
READ_BUFFER_BYTES = 1 << 16


@dataclass(frozen=True)
class Task:
    """One unit of work. `rows` is set for driver-read formats; Parquet tasks are read by the worker."""

    task_id: str
    file: str
    first_row: int
    num_rows: int
    row_group: int | None = None
    rows: pa.RecordBatch | None = None
    errors: tuple[RowError, ...] = ()


@dataclass
class Source:
    """The files of one input, their format, and the columns a run needs from them."""

    files: list[Path]
    format: str
    columns: list[str]
    chunk_rows: int
    total_rows: int | None = field(default=None)

    def fingerprint(self) -> list[dict[str, object]]:
        """What identifies this input for `--resume`: every file's path, size and modification time."""
        return [
            {"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
            for p in self.files
        ]

    def tasks(self) -> Iterator[Task]:
        offset = 0
        for i, path in enumerate(self.files):
            reader = {"parquet": _parquet_tasks, "csv": _csv_tasks, "jsonl": _jsonl_tasks}[self.format]
            for task in reader(i, path, self.columns, self.chunk_rows, offset):
                yield task
                offset = task.first_row + task.num_rows


def open_source(path: str | os.PathLike[str], columns: Sequence[str], chunk_rows: int) -> Source:
    """Find the input files under `path` (a file or a directory of files of one format) and check that
    they hold `columns`. Raises InputError for a missing path, an empty directory, mixed or unknown
    formats, missing columns, or an input with no rows."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"input {p} does not exist")
    files = (
        sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
        if p.is_dir()
        else [p]
    )
    if not files:
        raise InputError(f"input directory {p} holds no files")
    formats = {FORMATS.get(f.suffix.lower()) for f in files}
    if None in formats:
        odd = next(f for f in files if FORMATS.get(f.suffix.lower()) is None)
        raise InputError(
            f"cannot read {odd}: input files must be Parquet (.parquet), CSV (.csv) "
            f"or JSON Lines (.jsonl, .ndjson)"
        )
    if len(formats) > 1:
        raise InputError(f"input directory {p} mixes formats ({', '.join(sorted(str(x) for x in formats))})")
    fmt = formats.pop()
    assert fmt is not None
    source = Source(files, fmt, list(columns), chunk_rows)
    if fmt == "parquet":
        source.total_rows = _check_parquet(files, columns)
    else:
        for f in files:
            if f.stat().st_size == 0:
                raise InputError(f"input file {f} is empty")
        if fmt == "csv":
            _check_csv_header(files, columns)
    return source


def _check_parquet(files: list[Path], columns: Sequence[str]) -> int:
    total = 0
    for f in files:
        try:
            meta = pq.ParquetFile(f).metadata
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {f} as Parquet: {exc}") from exc
        names = set(meta.schema.names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(
                f"{f} lacks column(s) {', '.join(missing)}; it has {', '.join(meta.schema.names)}"
            )
        total += meta.num_rows
    if total == 0:
        raise InputError("the input has no rows")
    return total


def _check_csv_header(files: list[Path], columns: Sequence[str]) -> None:
    for f in files:
        try:
            reader = pacsv.open_csv(
                f,
                read_options=pacsv.ReadOptions(block_size=1 << 16),
                parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"cannot read {f} as CSV: {exc}") from exc
        missing = [c for c in columns if c not in reader.schema.names]
        if missing:
            raise InputError(
                f"{f} lacks column(s) {', '.join(missing)}; it has {', '.join(reader.schema.names)}"
            )


def _parquet_tasks(i: int, path: Path, columns: list[str], chunk_rows: int, offset: int) -> Iterator[Task]:
    meta = pq.ParquetFile(path).metadata
    for rg in range(meta.num_row_groups):
        n = meta.row_group(rg).num_rows
        if n:
            yield Task(f"{i:05d}-{rg:06d}", str(path), offset, n, row_group=rg)
        offset += n


def read_task(task: Task, columns: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """The rows of `task`, in chunks of at most `chunk_rows` (run by a worker)."""
    if task.rows is not None:
        yield task.rows
        return
    assert task.row_group is not None
    # buffer_size streams each column chunk instead of reading it whole: less memory, and faster here.
    # 64 KiB rather than 1 MiB: a 250,000-row group of 20 floats peaks at 54 MB of Arrow memory instead
    # of 72, as fast
    pf = pq.ParquetFile(task.file, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
    yield from pf.iter_batches(
        batch_size=chunk_rows, row_groups=[task.row_group], columns=columns, use_threads=False
    )


def _rechunk(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    pending: list[pa.RecordBatch] = []
    size = 0
    for b in batches:
        pending.append(b)
        size += b.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows).combine_chunks().to_batches()[0]
            rest = table.slice(chunk_rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _csv_tasks(i: int, path: Path, columns: list[str], chunk_rows: int, offset: int) -> Iterator[Task]:
    bad: list[RowError] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # `number` is the 1-based line number; rows before it may also have been skipped
        bad.append(
            RowError(
                -1, f"line {row.number}: expected {row.expected_columns} fields, got {row.actual_columns}"
            )
        )
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 22),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in columns},
                include_columns=columns,
                strings_can_be_null=True,
            ),
        )
        seq = 0
        for chunk in _rechunk(iter(reader), chunk_rows):
            errors, bad[:] = tuple(bad), []
            yield Task(f"{i:05d}-{seq:06d}", str(path), offset, chunk.num_rows, rows=chunk, errors=errors)
            offset += chunk.num_rows
            seq += 1
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {path} as CSV: {exc}") from exc
    if bad:  # malformed lines after the last full chunk
        empty = pa.RecordBatch.from_pydict({c: pa.array([], pa.string()) for c in columns})
        yield Task(f"{i:05d}-{seq:06d}", str(path), offset, 0, rows=empty, errors=tuple(bad))


def _jsonl_tasks(i: int, path: Path, columns: list[str], chunk_rows: int, offset: int) -> Iterator[Task]:
    seq = 0
    rows: list[dict[str, object]] = []
    errors: list[RowError] = []

    def task() -> Task:
        batch = pa.RecordBatch.from_pydict({c: _column([r.get(c) for r in rows]) for c in columns})
        return Task(f"{i:05d}-{seq:06d}", str(path), offset, batch.num_rows, rows=batch, errors=tuple(errors))

    with open(path, "rb") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                errors.append(RowError(-1, f"line {line_no}: invalid JSON ({exc})"))
                continue
            if not isinstance(obj, dict):
                errors.append(RowError(-1, f"line {line_no}: expected a JSON object"))
                continue
            rows.append(obj)
            if len(rows) >= chunk_rows:
                yield task()
                offset, seq = offset + len(rows), seq + 1
                rows, errors = [], []
    if rows or errors:
        yield task()


def _column(values: list[object]) -> pa.Array:
    """An Arrow column from JSON values; mixed types fall back to text so `conform` can name bad values."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode() for v in values],
            type=pa.string(),
        )
