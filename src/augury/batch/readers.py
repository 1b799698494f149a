"""Reading one task's rows, in the worker that scores it (tasks are planned by `sources`).

Each reader yields record batches of at most `chunk_rows` rows and reports the lines it cannot read as
`RowError`s (index -1, the reason naming the line in the file), so a bad line becomes a row error instead
of failing the run.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from augury.errors import InputError
from augury.schema import RowError

from .location import open_binary, parquet_file
from .sources import Task, decoded_row_bytes

#: the read buffer of a worker's Parquet stream.
READ_BUFFER_BYTES = 1 << 16
#: a Parquet task up to this size decoded is read a column at a time (`_by_column`); a larger one, which
#: only a plan made elsewhere gives (the batch plan cuts at `sources.PARQUET_TASK_BYTES`), is streamed.
BY_COLUMN_MAX_BYTES = 64 << 20


def read_task(task: Task, columns: list[str], chunk_rows: int,
              errors: list[RowError] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of `task`, in chunks of at most `chunk_rows`; unreadable lines go to `errors` (if given)."""
    bad = errors if errors is not None else []
    if task.format == "parquet":
        return _parquet_rows(task, columns, chunk_rows)
    if task.format == "csv":
        return _rechunk(_csv_rows(task, columns, bad), chunk_rows)
    return _jsonl_rows(task, columns, chunk_rows, bad)


def _parquet_rows(task: Task, columns: list[str], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    # buffer_size streams each column chunk instead of reading it whole: less memory, and faster here.
    # 64 KiB rather than 1 MiB: a 250,000-row group of 20 floats peaks at 54 MB of Arrow memory instead
    # of 72, as fast.
    # (on an object store, `parquet_file` fetches each column chunk whole instead: one request, not one
    # per 64 KiB)
    pf = parquet_file(task.file, pre_buffer=False, buffer_size=READ_BUFFER_BYTES)
    width = decoded_row_bytes(pf.metadata, columns, [task.row_group])
    if (task.stop - task.start) * width <= BY_COLUMN_MAX_BYTES:
        return _by_column(pf, task, columns, chunk_rows)
    return _range_batches(pf, task, columns, chunk_rows)  # all columns together: bounded by the readers


def _by_column(pf: pq.ParquetFile, task: Task, columns: list[str],
               chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """The task's rows read one column after the other, then handed out in chunks (slices, no copy).

    Why: a reader of all the columns at once holds every column's current page and dictionary (with
    1 MiB pages about 2.7 MB a column: 54 MB of Arrow memory for 20 float columns, whatever the rows),
    where one column at a time holds one column's, plus the task's rows themselves (20 MB for 131,072
    rows of 20 floats): 21-26 MB instead of 54-59 at the peak, measured in one worker (BENCHMARKS.md,
    issue 12). Every column is read in the same `chunk_rows` pieces, so the chunks line up."""
    fields: list[pa.Field] = []
    pieces: list[pa.ChunkedArray] = []
    for name in columns:
        kept: list[pa.Array] = []
        field = pf.schema_arrow.field(name)
        for batch in _range_batches(pf, task, [name], chunk_rows):
            field = batch.schema.field(0)
            kept.append(batch.column(0))
        fields.append(field)
        pieces.append(pa.chunked_array(kept, type=field.type))
    table = pa.Table.from_arrays(pieces, schema=pa.schema(fields))
    del pieces
    yield from table.to_batches(max_chunksize=chunk_rows)


def _range_batches(pf: pq.ParquetFile, task: Task, columns: list[str],
                   chunk_rows: int) -> Iterator[pa.RecordBatch]:
    """Rows [start, stop) of the task's row group: the batches before the range are decoded and
    dropped, the reading stops after it."""
    at = 0
    for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=[task.row_group], columns=columns,
                                 use_threads=False):
        lo, hi = max(task.start - at, 0), min(task.stop - at, batch.num_rows)
        at += batch.num_rows
        if hi > lo:
            yield batch if (lo, hi) == (0, batch.num_rows) else batch.slice(lo, hi - lo)
        if at >= task.stop:
            return


class _Range(io.RawIOBase):
    """Bytes [start, stop) of a file, as a stream (pyarrow's CSV reader reads it block by block)."""

    def __init__(self, fh: BinaryIO, start: int, stop: int) -> None:
        fh.seek(start)
        self.fh, self.left = fh, stop - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self.fh.readinto(memoryview(buffer)[: min(len(buffer), self.left)])  # type: ignore[attr-defined]
        self.left -= n or 0
        return n or 0


def _csv_rows(task: Task, columns: list[str], bad: list[RowError]) -> Iterator[pa.RecordBatch]:
    def on_invalid(row: pacsv.InvalidRow) -> str:
        # `number` (1-based, from the range's first line) when pyarrow knows it; it often does not
        number = row.number if isinstance(row.number, int) and row.number > 0 else None
        where = f"line {task.first_line + number}" if number else f"a line after line {task.first_line}"
        text = row.text if len(row.text) <= 80 else row.text[:77] + "..."
        bad.append(RowError(-1, f"{where}: expected {row.expected_columns} fields, got "
                                f"{row.actual_columns}: {text!r}"))
        return "skip"

    if task.stop <= task.start:
        return
    read = pacsv.ReadOptions(block_size=1 << 22, column_names=None if task.start == 0 else list(task.header))
    try:
        with open_binary(task.file) as fh:
            reader = pacsv.open_csv(
                io.BufferedReader(_Range(fh, task.start, task.stop), 1 << 20),
                read_options=read,
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in columns},
                    include_columns=columns,
                    strings_can_be_null=True,
                ),
            )
            yield from reader
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {task.file} as CSV: {exc}") from exc


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


def _jsonl_rows(task: Task, columns: list[str], chunk_rows: int,
                bad: list[RowError]) -> Iterator[pa.RecordBatch]:
    rows: list[dict[str, object]] = []
    try:
        with open_binary(task.file) as fh:
            fh.seek(task.start)
            pos, line_no = task.start, task.first_line
            while pos < task.stop:
                line = fh.readline()
                if not line:
                    break
                pos, line_no = pos + len(line), line_no + 1
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    bad.append(RowError(-1, f"line {line_no}: invalid JSON ({exc})"))
                    continue
                if not isinstance(obj, dict):
                    bad.append(RowError(-1, f"line {line_no}: expected a JSON object"))
                    continue
                rows.append(obj)
                if len(rows) >= chunk_rows:
                    yield _json_batch(rows, columns)
                    rows = []
    except OSError as exc:
        raise InputError(f"cannot read {task.file}: {exc}") from exc
    if rows:
        yield _json_batch(rows, columns)


def _json_batch(rows: list[dict[str, object]], columns: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({c: _column([r.get(c) for r in rows]) for c in columns})


def _column(values: list[object]) -> pa.Array:
    """An Arrow column from JSON values; mixed types fall back to text so `conform` can name bad values."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [None if v is None else v if isinstance(v, str) else orjson.dumps(v).decode() for v in values],
            type=pa.string(),
        )
