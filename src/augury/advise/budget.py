"""The advisor's time budget, and the one thread the model runs on while it is measured."""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Job = tuple[Callable[[], Any], concurrent.futures.Future[Any]]


class Budget:
    """A wall-clock budget (monotonic time) shared out between the advisor's steps."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.deadline = self.started + seconds

    def until(self, share: float) -> float:
        """The deadline of a step that may run until `share` of the whole budget is spent."""
        return self.started + self.seconds * share

    def spent(self) -> float:
        return time.monotonic() - self.started


class ModelThread:
    """Runs calls one at a time on a daemon thread whose native thread pools (BLAS, OpenMP) are capped at
    `threads`, as the server's model thread is; OpenMP's cap is per thread, so it is set there.

    A call still running when its caller stops waiting (`run` raises TimeoutError) cannot be stopped: the
    thread stays busy with it (`stuck` is True until it returns) and dies with the process if it never does.
    """

    def __init__(self, threads: int = 1) -> None:
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._threads = threads
        self._late: concurrent.futures.Future[Any] | None = None  # a call its caller gave up on
        self._thread = threading.Thread(target=self._loop, name="augury-advise-model", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        limiter = _limit_threads(self._threads)
        try:
            while (job := self._jobs.get()) is not None:
                fn, future = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(fn())
                except BaseException as exc:
                    future.set_exception(exc)
        finally:
            if limiter is not None:
                limiter.restore_original_limits()

    @property
    def stuck(self) -> bool:
        """True while a call that ran out of time is still running."""
        return self._late is not None and not self._late.done()

    def run(self, fn: Callable[[], T], timeout_s: float) -> T:
        """`fn()` on the model thread; TimeoutError if it has not returned after `timeout_s` seconds."""
        if self.stuck:
            raise TimeoutError("the model thread is still busy with a call that ran out of time")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        try:
            return future.result(timeout=max(timeout_s, 0.0))
        except TimeoutError:
            if not future.cancel():
                self._late = future
            raise

    def close(self) -> None:
        """Let the thread end after the call in hand, if any (it is a daemon: it never holds up exit)."""
        self._jobs.put(None)
        if not self.stuck:
            self._thread.join(timeout=5)


def _limit_threads(threads: int) -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # comes with scikit-learn; without it there is nothing to limit
        return None
    return threadpool_limits(limits=threads)
