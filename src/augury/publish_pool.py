"""Loading predictions in parallel: writer processes joined to one publish (issue 12).

`augury publish preds/` on a store that other processes can join (`store.base.SharedPublishing`: Redis,
SQLite) starts `writers` processes, then begins the publish (a 'loading' version under the driver's
lease), hands out the pieces one at a time through a queue (`plan`: a dataset's parts, or a Parquet
file's row groups, at least `BATCH_ROWS` rows a piece), and each writer opens the store again, joins the
publish and writes the pieces it takes, converting their rows as a single stream would (`publish_rows`).
The driver commits (ready and, unless told not to, active: one atomic switch) only once every piece was
written and the version holds exactly the rows verified, and aborts on anything else, so:

- a piece fails (a key written twice, a row of another model version, a store error): every writer is
  stopped, the publish aborted, and the writer's error raised (the same error a single stream gives);
- a writer dies (kill -9, out of memory): its exit is seen at once (its process sentinel), the others
  are stopped and the publish aborted: nothing is published, the active version stays as it was;
- the driver dies (kill -9): on Linux the kernel kills every writer with it (``PR_SET_PDEATHSIG``), and
  the publish's lease lapses (SQLite's flock at once, Redis's key within `lease_s`), so the version
  lists as an orphan and `gc` deletes it. The previous active version is untouched either way.

The writers start before the publish begins, forked when the driver runs no other thread (no copy of
the lease's file descriptor then lives in a writer, so a dead driver's lease is free at once), spawned
otherwise. The gates ran before any of this, in one pass over the whole dataset (`publish`): each row
is verified once and written once (a piece is handed to one writer, never retried).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from augury.batch import dataset, location
from augury.batch.location import used_object_store
from augury.children import die_with_parent, start_method
from augury.errors import (
    InputError,
    SchemaError,
    StoreBroken,
    StoreError,
    StoreUnavailable,
    VersionNotFoundError,
)
from augury.publish_rows import StoreRows
from augury.store import open_store
from augury.store import versions as vs
from augury.store.base import PredictionStore, PublishHandle, SharedPublishing, VersionInfo
from augury.verify.source import BATCH_ROWS

log = logging.getLogger(__name__)

#: how long the writers may take to close their stores once every part is written, before they are killed.
FINISH_S = 10.0

#: the errors a writer's failure is raised again as in the driver (by name); any other is a StoreError.
_KINDS: dict[str, type[Exception]] = {
    c.__name__: c for c in (InputError, SchemaError, StoreUnavailable, StoreBroken, VersionNotFoundError,
                            StoreError)
}


class SharedStore(PredictionStore, SharedPublishing, Protocol):
    """A store other processes join a publish of (`SharedPublishing`), with the rest of the contract."""


@dataclass(frozen=True)
class Piece:
    """What one writer task loads: a dataset's part (`row_groups` None: the part file `name` in the
    folder), or row groups of one Parquet file."""

    name: str
    rows: int
    row_groups: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Plan:
    """The pieces of predictions at `source` (a dataset folder, whose parts have `schema`, or a file)."""

    source: Path | str
    pieces: tuple[Piece, ...]
    schema: pa.Schema | None = None


def plan(source: Path | str, piece_rows: int = BATCH_ROWS) -> Plan:
    """The pieces of the predictions at `source`: a dataset's parts, or a file's row groups taken
    together until each piece has at least `piece_rows` rows (a task per tiny row group would cost more
    than it loads). InputError when it cannot be read."""
    if dataset.is_dataset_path(source) if isinstance(source, str) else source.is_dir():  # (str: a URL)
        manifest = dataset.read_manifest(source)
        return Plan(source, tuple(Piece(p.name, p.rows) for p in manifest.parts), manifest.schema)
    try:
        meta = location.parquet_file(str(source)).metadata
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{source} is not a readable Parquet file: {exc}") from exc
    pieces: list[Piece] = []
    groups: list[int] = []
    rows = 0
    for i in range(meta.num_row_groups):
        groups.append(i)
        rows += meta.row_group(i).num_rows
        if rows >= piece_rows or i == meta.num_row_groups - 1:
            pieces.append(Piece(os.path.basename(str(source)), rows, tuple(groups)))
            groups, rows = [], 0
    return Plan(source, tuple(pieces))


@dataclass(frozen=True)
class PartJob:
    """What a writer needs to load pieces of one publish (sent with each piece)."""

    url: str
    options: dict[str, Any]
    version: str
    source: str
    schema: pa.Schema | None
    rows: StoreRows


def writers_for(store: object, writers: int | None, parts: int) -> int:
    """How many writer processes load predictions of `parts` pieces into `store`: `writers` when given,
    else the store's own default (`publish_writers`), never more than one per piece. A store no other
    process can open (memory) takes one stream: InputError if more writers were asked for."""
    if writers is not None and (isinstance(writers, bool) or not isinstance(writers, int) or writers < 1):
        raise InputError(f"writers must be a whole number >= 1, not {writers!r}")
    if not isinstance(store, SharedPublishing):
        if writers is not None and writers > 1:
            raise InputError(f"{getattr(store, 'url', 'this store')} lives in one process: other writer "
                             f"processes cannot join its publish (use --writers 1)")
        return 1
    wanted = store.publish_writers if writers is None else writers
    return max(1, min(wanted, parts))


def load_parts(store: SharedStore, work: Plan, rows: StoreRows, writers: int, expected_rows: int, *,
               ttl_s: float | None, profile: dict[str, Any], meta: dict[str, Any],
               activate: bool) -> VersionInfo:
    """Publish the pieces of `work` into `store` with `writers` processes (see the module docstring);
    `expected_rows`: the rows verified, which the version must hold before it is committed."""
    ctx = _context()
    tasks = ctx.Queue()
    procs: list[BaseProcess] = []
    conns: list[Connection] = []
    try:
        for i in range(writers):  # before the publish begins (its lease must not be inherited)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_writer, args=(tasks, send, os.getpid()),
                               name=f"augury-publish-writer-{i}", daemon=True)
            proc.start()
            send.close()
            procs.append(proc)
            conns.append(recv)
        url, options = store.reopen_args()
        handle = store.begin_publish(model_version=rows.model_version, ttl_s=ttl_s, profile=profile,
                                     meta=meta)
        try:
            job = PartJob(url, options, handle.version, str(work.source), work.schema, rows)
            for piece in work.pieces:
                tasks.put((job, piece))
            for _ in procs:
                tasks.put(None)
            written = _collect(procs, conns, len(work.pieces), handle)
            _stop(procs, grace_s=FINISH_S)
            _check_rows(store, handle, written, expected_rows)
            handle.commit(activate)
        except BaseException:
            _stop(procs)
            handle.abort()
            raise
    finally:
        _stop(procs)
        for conn in conns:
            conn.close()
        tasks.cancel_join_thread()  # (parts a stopped writer never took may be left in it)
        tasks.close()
    return vs.find(store.versions(), handle.version)


def _context() -> ForkContext | SpawnContext:
    """The writers' start (`children.start_method`): forked unless this process runs another thread or
    has used an object store (a dataset read from s3://...)."""
    if start_method(not used_object_store()) == "fork":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _collect(procs: list[BaseProcess], conns: list[Connection], parts: int, handle: PublishHandle) -> int:
    """Wait until the writers have written all `parts` parts; the rows written. The first failure, or a
    writer that died, raises."""
    by_sentinel = {p.sentinel: p for p in procs}
    live = set(conns)
    done = rows = 0
    while done < parts:
        if not live and not by_sentinel:
            raise StoreError(f"store version {handle.version}: the writers stopped with {parts - done} "
                             "part(s) not written; nothing was published")
        for ready in wait([*live, *by_sentinel]):
            if isinstance(ready, Connection):
                try:
                    message = ready.recv()
                except EOFError:
                    live.discard(ready)
                    continue
                if message[0] == "error":
                    _, kind, text = message
                    raise _KINDS.get(kind, StoreError)(text if kind in _KINDS else
                                                       f"a publish writer failed: {kind}: {text}")
                rows += message[1]
                done += 1
            else:
                assert isinstance(ready, int)
                proc = by_sentinel.pop(ready)
                proc.join()
                if proc.exitcode != 0:
                    raise StoreError(
                        f"publish writer process {proc.pid} died ({_how(proc.exitcode)}) while loading "
                        f"store version {handle.version}; the publish was aborted, nothing was published")
    return rows


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _check_rows(store: SharedStore, handle: PublishHandle, written: int, expected: int) -> None:
    """StoreError unless the writers wrote, and the version holds, exactly the rows verified."""
    held = vs.find(store.versions(), handle.version).row_count
    if not written == held == expected:
        raise StoreError(f"store version {handle.version}: the writers wrote {written:,} rows and it holds "
                         f"{held:,}, but {expected:,} were verified; nothing was published")


def _stop(procs: list[BaseProcess], grace_s: float = 0.0) -> None:
    """Kill the writers still running after `grace_s` (0: at once, their partial writes go with the
    aborted version; after the last part, they are closing their store) and reap all."""
    deadline = time.monotonic() + grace_s
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.exitcode is None:
            proc.kill()
    for proc in procs:
        proc.join()


# -- in a writer process -------------------------------------------------------------------------------


def _writer(tasks: Any, results: Connection, driver: int) -> None:
    """A writer: take parts from `tasks` until a None, write each, and send ``("part", rows)``, or
    ``("error", kind, message)`` and stop."""
    die_with_parent(driver)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C (and stops the writers)
    opened: dict[str, tuple[Any, PublishHandle]] = {}
    try:
        while (item := tasks.get()) is not None:
            job, piece = item
            try:
                if job.version not in opened:
                    store = open_store(job.url, create=False, **job.options)
                    opened[job.version] = (store, store.join_publish(job.version))  # type: ignore[attr-defined]
                rows = _write_piece(job, piece, opened[job.version][1])
            except Exception as exc:
                if not isinstance(exc, tuple(_KINDS.values())):
                    log.exception("publish writer failed on %s of %s", piece, job.source)
                results.send(("error", type(exc).__name__, str(exc)))
                return
            results.send(("part", rows))
    finally:
        for store, _ in opened.values():
            store.close()
        results.close()


def _write_piece(job: PartJob, piece: Piece, handle: PublishHandle) -> int:
    """Write one piece's rows through `handle`; how many."""
    written = 0
    for batch in _batches(job, piece):
        written += handle.write(job.rows.convert(batch))
    return written


def _batches(job: PartJob, piece: Piece) -> Iterator[pa.RecordBatch]:
    """A piece's rows, `job.rows.columns` of them, as `PredictionsFile` streams them."""
    if piece.row_groups is None:
        assert job.schema is not None
        one = dataset.Manifest((dataset.Part(piece.name, piece.rows),), job.schema, {})
        source = job.source if location.is_url(job.source) else Path(job.source)
        yield from dataset.part_batches(source, one, job.rows.columns, BATCH_ROWS)
        return
    try:
        with location.parquet_file(job.source, pre_buffer=False) as f:
            yield from f.iter_batches(batch_size=BATCH_ROWS, row_groups=list(piece.row_groups),
                                      columns=job.rows.columns, use_threads=True)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read {job.source}: {exc}") from exc
