"""Inputs of a batch run, cut into deterministic tasks.

A task is the unit of work, of checkpointing and of exactly-once accounting: the same input and the same
`Plan` always give the same tasks, with the same ids, in the same order (a resumed run reuses the plan its
run recorded, whatever its --workers). Every task is a reference that a worker reads itself (`readers`),
so decoding runs in parallel and nothing large crosses a process boundary; the driver only plans:

- Parquet: one task per row group, or, where there are too few row groups for the workers or a group
  is larger than `PARQUET_TASK_BYTES` decoded, per range of `Plan.task_rows` rows inside one (a worker
  reads the row group up to its range's end: a range decodes its prefix again, the price of splitting a
  row group that pyarrow cannot seek into);
- CSV and JSON Lines: one task per range of about `Plan.task_bytes` bytes, cut at line ends (a task owns
  the lines that start in its range). The planner reads each file once to find the cuts and count the
  lines before each, so errors name their line in the file. A CSV value may not hold a line break (as
  pyarrow's reader, `newlines_in_values=False`, already required).

Files are local paths or object-store URLs (`location`): a URL's files are listed, planned and read through
its filesystem, a Parquet footer once per file (each read there is a request).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augury.errors import InputError

from . import dataset, location
from .location import is_url, open_binary, open_input, size_of

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
#: tasks planned per worker where the input allows: enough that the last ones end together.
TASKS_PER_WORKER = 3


#: bytes read at a time while planning the cuts of a text file.
_SCAN_BYTES = 1 << 20
#: a Parquet task's input once decoded, at most, where the plan cuts row groups into ranges: a worker
#: holds its task's rows (it reads them a column at a time, `readers`), so this bounds a worker's input
#: memory whatever the row groups. 24 MiB: a 250,000-row group of 20 floats (38 MiB) becomes two ranges
#: of 131,072 and 118,928 rows; a worker's peak fell from +88 to +47 MB (BENCHMARKS.md, issue 12).
PARQUET_TASK_BYTES = 24 << 20


@dataclass(frozen=True)
class Task:
    """One unit of work, read by a worker. Parquet: rows [`start`, `stop`) of `row_group`; CSV and JSON
    Lines: the lines that start in bytes [`start`, `stop`), `first_line` lines into the file (0-based),
    `header` the CSV's column names."""

    task_id: str
    file: str
    format: str
    start: int
    stop: int
    row_group: int = -1
    first_line: int = 0
    header: tuple[str, ...] = ()

    @property
    def num_rows(self) -> int | None:
        """Rows of a Parquet task; None for text (known once read)."""
        return self.stop - self.start if self.format == "parquet" else None


@dataclass(frozen=True)
class Plan:
    """How finely an input is cut: `task_rows` (Parquet; None: whole row groups) and `task_bytes` (text).
    Recorded with a run, so that its resume cuts the input into the same tasks."""

    task_rows: int | None = None
    task_bytes: int = 16 << 20

    def to_dict(self) -> dict[str, int | None]:
        return {"task_rows": self.task_rows, "task_bytes": self.task_bytes}

    @staticmethod
    def from_dict(d: object) -> Plan:
        """The plan `to_dict` recorded; ValueError when `d` is not one (a damaged run.json)."""
        if not isinstance(d, dict):
            raise ValueError(f"the plan is {type(d).__name__}, not an object")
        task_rows, task_bytes = d.get("task_rows"), d.get("task_bytes")
        if any(not (v is None or type(v) is int) for v in (task_rows, task_bytes)):
            raise ValueError(f"the plan {d} does not say how the input was cut")
        return Plan(task_rows, task_bytes or Plan.task_bytes)


@dataclass
class Source:
    """The files of one input, their format, and the columns a run needs from them."""

    #: local paths or object-store URLs
    files: list[str]
    format: str
    columns: list[str]
    chunk_rows: int
    total_rows: int | None = field(default=None)
    #: the Parquet footers read while checking the input, by file (not read again to plan)
    metas: dict[str, pq.FileMetaData] = field(default_factory=dict, repr=False)

    def fingerprint(self) -> list[dict[str, object]]:
        """What identifies this input for `--resume`: every file's path (or URL), size and modification
        time."""
        return [_file_fingerprint(f) for f in self.files]

    def metadata(self, file: str) -> pq.FileMetaData:
        if file not in self.metas:
            self.metas[file] = _parquet_metadata(file)
        return self.metas[file]

    def plan(self, workers: int) -> Plan:
        """Cut for about `TASKS_PER_WORKER` tasks a worker, so no core waits at the end: Parquet row
        groups are split for several workers and fewer groups than that, and wherever a group decodes to
        more than `PARQUET_TASK_BYTES`; ranges are whole chunks. Text ranges are 1-16 MiB (a worker's read
        buffer is one range at most)."""
        target = TASKS_PER_WORKER * workers
        task_rows = None
        if self.format == "parquet" and self.total_rows:
            metas = [self.metadata(f) for f in self.files]
            groups = sum(m.num_row_groups for m in metas)
            if workers > 1 and groups < target:
                chunks = -(-self.total_rows // (target * self.chunk_rows))
                task_rows = max(1, chunks) * self.chunk_rows
            width = max(decoded_row_bytes(m, self.columns) for m in metas)
            cap = max(1, int(PARQUET_TASK_BYTES // (width * self.chunk_rows))) * self.chunk_rows
            largest = max(m.row_group(i).num_rows for m in metas for i in range(m.num_row_groups))
            if largest > cap:
                task_rows = min(task_rows or cap, cap)
        size = sum(size_of(f) for f in self.files)
        task_bytes = min(max(size // target, 1 << 20), 16 << 20)
        return Plan(task_rows, task_bytes)

    def tasks(self, plan: Plan = Plan()) -> Iterator[Task]:
        """The tasks of this input under `plan`, in input order."""
        for i, path in enumerate(self.files):
            if self.format == "parquet":
                yield from _parquet_tasks(i, path, self.metadata(path), plan.task_rows)
            else:
                header = tuple(_csv_names(path)) if self.format == "csv" else ()
                yield from _text_tasks(i, path, self.format, plan.task_bytes, header)


def open_source(path: str | os.PathLike[str], columns: Sequence[str], chunk_rows: int) -> Source:
    """Find the input files under `path` (a file or a directory of files of one format; a local path or
    an object-store URL) and check that they hold `columns`. Raises InputError for a missing path, an
    empty directory, mixed or unknown formats, missing columns, or an input with no rows."""
    p = os.fspath(path)
    files = _remote_files(p) if is_url(p) else _local_files(Path(p))
    if not files:
        raise InputError(f"input directory {p} holds no files")
    formats = {FORMATS.get(_suffix(f)) for f in files}
    if None in formats:
        odd = next(f for f in files if FORMATS.get(_suffix(f)) is None)
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
        source.total_rows = _check_parquet(source, columns, p)
    else:
        for f in files:
            if size_of(f) == 0:
                raise InputError(f"input file {f} is empty")
        if fmt == "csv":
            _check_csv_header(files, columns)
    return source


def decoded_row_bytes(meta: pq.FileMetaData, columns: Sequence[str],
                      row_groups: Sequence[int] | None = None) -> float:
    """About how many bytes one row of `columns` takes once read into Arrow, from a Parquet file's
    footer (of `row_groups`, default all): a fixed-width type's width, a variable-width column's stored
    size per row plus its offset (an estimate: a dictionary-encoded text column decodes larger)."""
    schema = meta.schema.to_arrow_schema()
    groups = range(meta.num_row_groups) if row_groups is None else row_groups
    stored = dict.fromkeys(columns, 0)
    rows = 0
    for i in groups:
        rg = meta.row_group(i)
        rows += rg.num_rows
        for j in range(rg.num_columns):
            top = rg.column(j).path_in_schema.split(".")[0]
            if top in stored:
                stored[top] += rg.column(j).total_uncompressed_size
    width = 0.0
    for name in columns:
        try:
            width += schema.field(name).type.bit_width / 8
        except ValueError:  # variable width
            width += stored[name] / max(rows, 1) + 4
    return max(width, 1.0)


def _local_files(p: Path) -> list[str]:
    if not p.exists():
        raise InputError(f"input {p} does not exist")
    if not p.is_dir():
        return [str(p)]
    found = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
    return [str(f) for f in found]


def _remote_files(url: str) -> list[str]:
    """The files of an object-store input: the object itself, or the objects under the prefix in name
    order, but none under a name starting with `.` or `_` (a dataset's manifest and a run's state); a
    prediction dataset (with a manifest) gives the parts its manifest lists, never a part a retried task
    left beside them."""
    if location.info(url).type == pafs.FileType.File:
        return [url]
    prefix = location.filesystem(url)[1] + "/"
    found = location.listing(url)
    if not found:
        raise InputError(f"input {url} does not exist (no object at or under it)")
    if any(f.path == prefix + dataset.MANIFEST for f in found):
        folder = url.rstrip("/")
        return [location.join(folder, part.name) for part in dataset.read_manifest(folder).parts]
    names = sorted(f.path for f in found)
    return [location.url_of(url, n) for n in names
            if not any(c.startswith((".", "_")) for c in n[len(prefix):].split("/"))]


def _suffix(file: str) -> str:
    return os.path.splitext(file.rstrip("/"))[1].lower()


def _file_fingerprint(file: str) -> dict[str, object]:
    if not is_url(file):
        p = Path(file)
        return {"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
    found = location.info(file)
    return {"path": file, "size": found.size, "mtime_ns": found.mtime_ns}


def _parquet_metadata(file: str) -> pq.FileMetaData:
    try:
        return pq.ParquetFile(open_input(file)).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {file} as Parquet: {exc}") from exc


def _check_parquet(source: Source, columns: Sequence[str], path: str) -> int:
    total = 0
    for f in source.files:
        meta = source.metadata(f)
        names = set(meta.schema.names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(
                f"{f} lacks column(s) {', '.join(missing)}; it has {', '.join(meta.schema.names)}"
            )
        total += meta.num_rows
    if total == 0:
        raise InputError(f"{source.files[0] if len(source.files) == 1 else path} has no rows")
    return total


def _check_csv_header(files: list[str], columns: Sequence[str]) -> None:
    for f in files:
        names = _csv_names(f)
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(f"{f} lacks column(s) {', '.join(missing)}; it has {', '.join(names)}")


def _csv_names(path: str) -> list[str]:
    """The column names of a CSV file's header line."""
    try:
        reader = pacsv.open_csv(
            open_binary(path) if is_url(path) else path,
            read_options=pacsv.ReadOptions(block_size=1 << 16),
            parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read {path} as CSV: {exc}") from exc
    return list(reader.schema.names)


def _parquet_tasks(i: int, path: str, meta: pq.FileMetaData, task_rows: int | None) -> Iterator[Task]:
    for rg in range(meta.num_row_groups):
        n = meta.row_group(rg).num_rows
        if n and (task_rows is None or n <= task_rows):
            yield Task(f"{i:05d}-{rg:06d}", str(path), "parquet", 0, n, row_group=rg)
        elif n and task_rows is not None:
            for k, start in enumerate(range(0, n, task_rows)):
                stop = min(n, start + task_rows)
                yield Task(f"{i:05d}-{rg:06d}-{k:04d}", str(path), "parquet", start, stop, row_group=rg)


def _text_tasks(i: int, path: str, fmt: str, task_bytes: int, header: tuple[str, ...]) -> Iterator[Task]:
    size = size_of(path)
    starts, lines = line_cuts(path, task_bytes)
    for k, (start, stop) in enumerate(zip(starts, [*starts[1:], size], strict=True)):
        yield Task(f"{i:05d}-{k:06d}", str(path), fmt, start, stop, first_line=lines[k], header=header)


def line_cuts(path: str | Path, task_bytes: int) -> tuple[list[int], list[int]]:
    """Where the tasks of a text file start: 0, and the byte after the first line end at or past byte
    k x `task_bytes` - 1 for each k (once each: a line longer than a range ends one task), so a task owns
    the lines that start in its range; and how many line ends come before each start. One pass,
    `_SCAN_BYTES` at a time."""
    size = size_of(str(path))
    starts, lines = [0], [0]
    cut, pos, count = task_bytes, 0, 0
    try:
        with open_binary(str(path)) as fh:
            while block := fh.read(_SCAN_BYTES):
                end, done = pos + len(block), 0
                while cut - 1 < end:
                    i = block.find(b"\n", max(cut - 1 - pos, done))
                    if i < 0:
                        break
                    count += block.count(b"\n", done, i + 1)
                    done = i + 1
                    if pos + done < size:
                        starts.append(pos + done)
                        lines.append(count)
                    cut = -(-(pos + done + 1) // task_bytes) * task_bytes  # next multiple past it
                count += block.count(b"\n", done)
                pos = end
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    return starts, lines


from .readers import read_task  # noqa: E402  (re-exported: callers read tasks from here; readers needs Task)

__all__ = ["FORMATS", "PARQUET_TASK_BYTES", "Plan", "Source", "Task", "decoded_row_bytes", "line_cuts",
           "open_source", "read_task"]
