"""Dynamic batching: requests that arrive together are scored together, in one model call.

A request is a list of n >= 1 rows (whatever the caller's `predict` takes: the server passes feature
rows already cast by `schema.cast_row`). `await Batcher.submit(rows)` returns exactly that request's
results, one per row, in order. Queued requests are taken first in, first out, into batches of at most
`max_batch_size` rows (a single larger request runs alone, never split); the rows of a batch's requests
are joined into one flat list for one `predict` call, which runs on an executor thread, and the results
are sliced back per request by row offsets. Rows are plain Python objects, not Arrow batches: building a
one-row record batch per request costs ~80 µs and concatenating them more, while the caller's `predict`
turns the whole flat list into one batch in a single pass.

The loop (after Ray Serve's `serve/batching.py`): block for the first request, then start the wait timer
(`time.monotonic()`) and take more until the batch is full or `max_delay_ms` has passed. While the model
scores one batch the next is collected; it is topped up with whatever arrived and sent once the model
is free, so under load batches grow instead of requests queueing one model call each. "Once" is after
the event loop has turned until a turn brings no new request (at most `SETTLE_TURNS`): the requests of
the clients just answered, already on their way, join the batch. Without that, 32 clients settled into
two alternating batches of 16 instead of one of 32, and, the model's cost being largely per call, served
fewer requests (measured with a 100-tree HistGradientBoosting model: 7,000 instead of 8,700 requests/s
with one turn, when scikit-learn scored it; 14,000 instead of 17,500 with the compiled evaluator and
answers written at the end of a turn, which needs two or three).

A fast model is called on the event loop's own thread: once the recent batches (a moving average) took
less than `inline_below_ms`, the next one is scored in place instead of being handed to the model thread.
The hand-off costs more than such a model: an executor round trip, a wake-up of the loop through its
self-pipe, and the two threads taking turns at the GIL (measured in process on 2 cores with a 100-tree
HistGradientBoosting model: ~90 µs of CPU per request at 4 concurrent clients, batches of ~2, against
~78 µs in place). The loop then pauses for that long, which is why the threshold is small; a model that
slows down past it goes back to its thread with the next batch.

Failure is per batch: if `predict` raises or returns other than one result per input row, every request
of that batch fails (framework errors become `PredictionError`) and the loop carries on with the next.
(A `predict` that wants per-row failures returns them as results: the server's does.)
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, Protocol, TypeVar

import msgspec

from augury.errors import (
    AuguryError,
    ConfigError,
    DeadlineExceeded,
    InputError,
    OverloadedError,
    PredictionError,
)

log = logging.getLogger(__name__)

#: most loop turns the next batch waits for requests already on their way once the model is free.
SETTLE_TURNS = 4

Row = TypeVar("Row")
Result = TypeVar("Result")


class BatchObserver(Protocol):
    """Hooks for metrics. Every method has a no-op default: subclass and override the ones you need.

    Hooks run on the event loop thread and must be cheap; an exception from one is logged and ignored.
    """

    def batch_scored(self, rows: int, requests: int, inference_s: float) -> None:
        """A batch of `requests` requests, `rows` rows in all, was scored in `inference_s` seconds."""
        return None

    def batch_failed(self, requests: int, error: BaseException) -> None:
        """A batch of `requests` requests failed as a whole with `error` (all of them got it)."""
        return None

    def queue_wait(self, seconds: float) -> None:
        """A request waited `seconds` between `submit` and its batch being sent to the model."""
        return None

    def shed(self) -> None:
        """A request was refused with `OverloadedError` because the queue was full."""
        return None

    def deadline_missed(self) -> None:
        """A request failed with `DeadlineExceeded` (its deadline passed before it was answered)."""
        return None


class _NoObserver(BatchObserver):
    """The default observer: every hook does nothing."""


class _Request(msgspec.Struct, Generic[Row, Result], frozen=True, eq=False):
    """One queued request, created before it is queued; `future` resolves to its results."""

    rows: Sequence[Row]
    future: asyncio.Future[list[Result]]
    enqueued_at: float
    deadline: float | None
    group: Hashable
    size: int  # len(rows)


class Batcher(Generic[Row, Result]):
    """Coalesce concurrent `submit` calls into batched calls of `predict`, one batch in flight at a time.

    `predict` takes the flat list of rows of every request in a batch and must return one result per
    row, in order. `max_batch_size` counts rows; `max_delay_ms` is how long a batch waits for company
    after its first request; `max_queue` bounds the requests waiting to be batched. The model runs on
    `executor` (by default a single thread owned, and shut down, by the batcher), so the event loop keeps
    accepting requests, unless its recent batches took less than `inline_below_ms` (0: never): then in
    place, on the loop's thread (see the module docstring). The batcher belongs to the event loop it is
    started on (by `start()` or the first `submit`).
    """

    def __init__(self, predict: Callable[[list[Row]], Sequence[Result]], *, max_batch_size: int = 64,
                 max_delay_ms: float = 2.0, max_queue: int = 1024,
                 executor: concurrent.futures.Executor | None = None,
                 observer: BatchObserver | None = None, inline_below_ms: float = 0.0) -> None:
        if max_batch_size < 1 or max_queue < 1 or not max_delay_ms >= 0 or not inline_below_ms >= 0:
            raise ConfigError(f"batcher needs max_batch_size >= 1, max_queue >= 1, max_delay_ms >= 0 and "
                              f"inline_below_ms >= 0; got {max_batch_size}, {max_queue}, {max_delay_ms}, "
                              f"{inline_below_ms}")
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.inline_below_s = inline_below_ms / 1000.0
        self._predict = predict
        self._owns_executor = executor is None
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, "augury-batcher")
        self._observer: BatchObserver = observer or _NoObserver()
        self._queue: collections.deque[_Request[Row, Result]] = collections.deque()
        self._arrived = asyncio.Event()
        self._forming: list[_Request[Row, Result]] = []  # taken from the queue, not yet sent to the model
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False
        self._batch_s = 0.0  # recent seconds per batch (moving average), for retry_after_s
        self._requests_per_batch = 1.0
        self._answered = 0  # requests in the last batch sent to the model

    @property
    def queue_depth(self) -> int:
        """Requests waiting to be taken into a batch (not counting the batch being formed or scored)."""
        return len(self._queue)

    def start(self) -> None:
        """Start the batching loop on the running event loop; `submit` calls it. Idempotent.

        Raises RuntimeError outside a running loop, or on a loop other than the one it was started on.
        """
        if self._closed:
            raise _shutting_down()
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._loop, self._task = loop, loop.create_task(self._run(), name="augury-batcher")
        elif loop is not self._loop:
            raise RuntimeError("this batcher was started on another event loop")

    async def submit(self, rows: Sequence[Row], deadline: float | None = None,
                     group: Hashable = None) -> list[Result]:
        """Score `rows` within a batch of other requests; return their results, one per row, in order.

        Requests of different `group`s (say, rows for different models) never share a batch. `deadline`
        is an absolute `time.monotonic()` value: past it the request is never sent to the model and
        `submit` raises `DeadlineExceeded` (a request already being scored is given up at its deadline).
        Raises `OverloadedError` at once if `max_queue` requests are waiting or the batcher is closed,
        and `PredictionError` (or the model's own `AuguryError`) if its batch failed.
        """
        if len(rows) < 1:
            raise InputError("a request to the batcher must hold at least one row")
        self.start()
        assert self._loop is not None
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            self._notify(self._observer.deadline_missed)
            late_ms = (now - deadline) * 1e3
            raise DeadlineExceeded(f"request deadline passed {late_ms:.1f} ms before it was queued")
        if len(self._queue) >= self.max_queue:
            self._notify(self._observer.shed)
            raise OverloadedError(f"too many requests waiting ({len(self._queue)}); retry later",
                                  self.retry_after_s())
        req: _Request[Row, Result] = _Request(rows, self._loop.create_future(), now, deadline, group,
                                              len(rows))
        self._queue.append(req)
        self._arrived.set()
        try:
            if deadline is None:
                return await req.future
            await asyncio.wait((req.future,), timeout=deadline - time.monotonic())
            if req.future.done():
                return req.future.result()
            now = time.monotonic()
            where = "in the queue" if req in self._queue or req in self._forming else "while being scored"
            self._notify(self._observer.deadline_missed)
            raise DeadlineExceeded(f"request deadline passed ({(now - deadline) * 1e3:.1f} ms late) after "
                                   f"{(now - req.enqueued_at) * 1e3:.1f} ms {where}")
        finally:
            if not req.future.done() or req.future.cancelled():  # client gone or deadline: drop the request
                req.future.cancel()
                with contextlib.suppress(ValueError):
                    self._queue.remove(req)

    def retry_after_s(self) -> float:
        """Seconds a shed client should wait: the batches queued ahead × recent seconds per batch, >= 1 s.

        Batches ahead = queued requests / requests per recent batch; both averages are exponentially
        weighted (alpha 0.2) over scored batches. Rounded up to whole seconds, as `Retry-After` takes.
        """
        batches_ahead = len(self._queue) / max(self._requests_per_batch, 1.0)
        return float(max(1, math.ceil(batches_ahead * self._batch_s)))

    async def close(self) -> None:
        """Stop the loop, fail every waiting request with `OverloadedError` (shutting down), let the batch
        being scored finish, and shut down the executor if the batcher owns it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait((self._task,))
        waiting, self._forming = [*self._forming, *self._queue], []
        self._queue.clear()
        _fail(waiting, _shutting_down())
        if self._inflight is not None:
            await asyncio.wait((self._inflight,))
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    async def _run(self) -> None:
        """The batching loop. It ends only when `close` cancels it; a failed batch never stops it."""
        assert self._loop is not None
        while True:
            self._forming = []
            try:
                await self._collect(self._forming)
                if self._inflight is not None and not self._inflight.done():
                    await asyncio.wait((self._inflight,))  # the model is busy: the batch gains requests
                if self._answered > 1:
                    await self._settle(self._answered)
                self._take(self._forming)
                ready = self._ready(self._forming)
                if not ready:
                    continue
                if self._inline():
                    await self._score(ready)  # in place: no task to hand the batch to
                else:
                    self._inflight = self._loop.create_task(self._score(ready))
            except Exception as exc:  # a bug here must fail these requests, not stop serving
                log.exception("batcher loop failed; failing %d requests, carrying on", len(self._forming))
                _fail(self._forming, PredictionError(f"batching failed: {type(exc).__name__}: {exc}"))

    async def _settle(self, answered: int) -> None:
        """Let the event loop turn until a turn brings no new request (at most `SETTLE_TURNS` turns), or
        until as many requests are here as the last batch answered, so that the clients just answered,
        whose next requests are already on their way, join the batch about to be sent. Each turn runs
        whatever the loop has ready (answers are written at the end of a turn, `serve.protocol`), then
        reads the sockets without waiting. Once every client of the last batch is back (one client alone
        always is), no turn is spent: each cost ~10 µs of CPU per batch, in process on 2 cores, and most
        of a one-client request's time was spent in four of them."""
        for _ in range(SETTLE_TURNS):
            queued = len(self._queue)
            if len(self._forming) + queued >= answered:
                return
            await asyncio.sleep(0)
            if len(self._queue) == queued and queued:
                return

    async def _collect(self, batch: list[_Request[Row, Result]]) -> bool:
        """Block for the first request, then take more until the batch is full or max_delay_s has passed;
        whether it is full."""
        full = False
        while not batch:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            full = self._take(batch)
        until = time.monotonic() + self.max_delay_s
        while not full and (remaining := until - time.monotonic()) > 0:
            if not self._queue:
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._arrived.wait()
            full = self._take(batch)
        return full

    def _take(self, batch: list[_Request[Row, Result]]) -> bool:
        """Move queued requests into `batch` while they fit; True when it can take no more.

        A request that would pass max_batch_size rows, or of another group, waits for the next batch;
        an empty batch takes the first request whatever its size.
        """
        rows = sum(r.size for r in batch)
        while self._queue:
            nxt = self._queue[0]
            if batch and (rows + nxt.size > self.max_batch_size or nxt.group != batch[0].group):
                return True
            batch.append(self._queue.popleft())
            rows += nxt.size
        return rows >= self.max_batch_size

    def _ready(self, batch: list[_Request[Row, Result]]) -> list[_Request[Row, Result]]:
        """The requests to send: drop cancelled ones, fail those past their deadline."""
        now = time.monotonic()
        ready = []
        for req in batch:
            if req.future.done():
                continue
            if req.deadline is not None and req.deadline <= now:
                req.future.set_exception(DeadlineExceeded(
                    f"request deadline passed ({(now - req.deadline) * 1e3:.1f} ms late) after "
                    f"{(now - req.enqueued_at) * 1e3:.1f} ms in the queue; it was not scored"))
                self._notify(self._observer.deadline_missed)
            else:
                ready.append(req)
                self._notify(self._observer.queue_wait, now - req.enqueued_at)
        return ready

    async def _score(self, batch: list[_Request[Row, Result]]) -> None:
        """Score one batch on the executor and resolve each request's future with its own results."""
        assert self._loop is not None
        rows = sum(r.size for r in batch)
        self._answered = len(batch)
        try:
            if self._inline():
                out, seconds = self._call_model(batch)
            else:
                out, seconds = await self._loop.run_in_executor(self._executor, self._call_model, batch)
        except Exception as exc:
            error = exc if isinstance(exc, AuguryError) else PredictionError(
                f"model failed on a batch of {rows} rows: {type(exc).__name__}: {exc}")
            if error is not exc:
                error.__cause__ = exc
            _fail(batch, error)
            self._notify(self._observer.batch_failed, len(batch), error)
            return
        offset = 0
        for req in batch:
            if not req.future.done():
                req.future.set_result(out[offset:offset + req.size])
            offset += req.size
        self._batch_s = seconds if self._batch_s == 0 else 0.8 * self._batch_s + 0.2 * seconds
        self._requests_per_batch = 0.8 * self._requests_per_batch + 0.2 * len(batch)
        self._notify(self._observer.batch_scored, rows, len(batch), seconds)

    def _inline(self) -> bool:
        """Whether the next batch is scored on the loop's thread (recent batches took < inline_below_s)."""
        return 0 < self._batch_s < self.inline_below_s

    def _call_model(self, batch: list[_Request[Row, Result]]) -> tuple[list[Result], float]:
        """On the executor thread: join the rows, predict, check one result per input row."""
        rows = list(batch[0].rows) if len(batch) == 1 else [row for r in batch for row in r.rows]
        started = time.monotonic()
        out = self._predict(rows)
        seconds = time.monotonic() - started
        if not isinstance(out, Sequence) or isinstance(out, str | bytes):
            raise PredictionError(f"model returned {type(out).__name__}, expected a list of results")
        if len(out) != len(rows):
            raise PredictionError(f"model returned {len(out)} rows for {len(rows)} inputs")
        return list(out), seconds

    def _notify(self, hook: Callable[..., None], *args: object) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("batch observer hook %s failed", getattr(hook, "__name__", hook))


def _fail(batch: list[_Request[Row, Result]], error: BaseException) -> None:
    for req in batch:
        if not req.future.done():
            req.future.set_exception(error)


def _shutting_down() -> OverloadedError:
    return OverloadedError("the batcher is closed: the server is shutting down", retry_after_s=1.0)
