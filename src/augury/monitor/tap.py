"""The observer hook: each answered request's examples and answers, handed off the request's path.

The data plane (`augury.serve.service.Service`: every prediction route calls it) offers each answered
request to a `Tap`. `offer` runs on the event loop and does O(1) work whatever the request's size: a
sampling decision, a length check and one ``deque.append`` of references to objects the request made
anyway (its examples and answers are immutable). One thread of the tap's own drains the queue every
`DRAIN_EVERY_S` and hands what it took, oldest first, to each `PredictionObserver`. So an observer's
work (profiles, PSI, a shadow model call) never runs inside a request, and a slow observer cannot slow
one down: when the queue holds `capacity` requests, new ones are dropped, not waited for, and counted in
``augury_monitor_samples_total{result="dropped"}``. (It still shares the process's cores and the GIL
with the event loop: that cost is measured in BENCHMARKS.md, and `max_rate` bounds it.)

`sample` is the share of requests offered (1.0: every one; 0: the tap does nothing), decided by a credit
that grows by `sample` per request rather than by a random draw: cheaper, and an even spacing. Then
`max_rate` caps the requests offered per second (a token bucket holding a tenth of a second's worth): a
quiet server is watched whole, a busy one through an even sample in time, and the monitor's cost stays
bounded whatever the traffic (measured in BENCHMARKS.md).

The counters are updated on the event loop only (the `accumulators` rule); the observer thread touches
none of them.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import msgspec

from augury.monitor.accumulators import CounterFamily

log = logging.getLogger(__name__)

#: seconds between two drains of the queue by the observer thread (observations are this late at most,
#: plus the observers' own time).
DRAIN_EVERY_S = 0.05
#: most requests waiting for the observers, by default (past it new ones are dropped and counted).
DEFAULT_CAPACITY = 1024
#: observations handed to an observer in one call; the GIL is let go between calls.
CHUNK = 128


def yield_gil() -> None:
    """Let the event loop's thread run now if it is waiting for the GIL (``time.sleep(0)`` releases it).

    Without it a thread doing Python work keeps the GIL until the interpreter's switch interval (5 ms)
    forces it off, and a request being handled on the event loop waits that long. Letting go between
    chunks bounds that wait to one chunk's work (tens of microseconds). Its effect on CPU per request
    was within the noise of the measurements so far (BENCHMARKS.md)."""
    time.sleep(0)


class ServedExample(Protocol):
    """An example as the data plane saw it (`augury.serve.answers.Example`)."""

    @property
    def key(self) -> str | None: ...

    @property
    def row(self) -> Sequence[Any] | None:
        """Its features cast to the model's input schema, in schema order (None: looked up by key)."""


class ServedAnswer(Protocol):
    """An answer as the data plane gave it (`augury.serve.answers.Answer`)."""

    @property
    def values(self) -> Mapping[str, Any]: ...

    @property
    def provenance(self) -> Mapping[str, Any]: ...


class Observation(msgspec.Struct, frozen=True):
    """One answered request: its examples and, aligned with them, its answers (None where an example got
    none: a static miss or a refused key), and when it was answered (``time.time()``)."""

    examples: Sequence[ServedExample]
    answers: Sequence[ServedAnswer | None]
    at: float


class PredictionObserver(Protocol):
    """What watches the served data. `observe` is called on the tap's thread (never on the event loop)
    every `DRAIN_EVERY_S` or so, with the observations taken since the last call, oldest first (none in a
    quiet spell: so an observer can close a window of T seconds without traffic). It may be slow (new
    observations are then dropped and counted) but should not raise (an exception is logged and the next
    call comes)."""

    def observe(self, observations: Sequence[Observation]) -> None: ...


class Tap:
    """A bounded hand-off from the data plane to the observers' thread (see the module docstring)."""

    def __init__(self, observers: Sequence[PredictionObserver], samples: CounterFamily, *,
                 sample: float = 1.0, capacity: int = DEFAULT_CAPACITY, max_rate: float = 0.0,
                 on_close: Sequence[Callable[[], None]] = ()) -> None:
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample must be within [0, 1], not {sample!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity!r}")
        if not max_rate >= 0:
            raise ValueError(f"max_rate must be 0 (no limit) or more, not {max_rate!r}")
        self.observers = list(observers)
        self.capacity = capacity
        self._on_close = list(on_close)  # (what the observers hand on: the alert webhook)
        self.sample = sample if self.observers else 0.0  # (0: nothing is offered; observers still run)
        self._queue: collections.deque[Observation] = collections.deque()
        self._credit = 0.0
        self.max_rate = max_rate  # requests offered per second at most (0: no limit)
        self._burst = max(1.0, max_rate / 10)
        self._tokens = self._burst
        self._refilled = time.monotonic()
        self._queued = samples.labels("queued")
        self._dropped = samples.labels("dropped")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Requests waiting for the observers."""
        return len(self._queue)

    def offer(self, examples: Sequence[ServedExample], answers: Sequence[ServedAnswer | None]) -> None:
        """Queue one answered request for the observers, if sampled and if there is room (else count it
        dropped). On the event loop; never blocks."""
        if self._admits():
            self._queue.append(Observation(examples, answers, time.time()))
            self._queued.value += 1

    def offer_made(self, make: Callable[[Any, Any], tuple[Sequence[ServedExample],
                                                           Sequence[ServedAnswer | None]]],
                   first: Any, second: Any) -> None:
        """`offer(*make(first, second))`, calling `make` only if the request is sampled and there is room
        (for an answer kept encoded, decoded for the observers only then: `serve.lookup_memo`)."""
        if self._admits():
            examples, answers = make(first, second)
            self._queue.append(Observation(examples, answers, time.time()))
            self._queued.value += 1

    def _admits(self) -> bool:
        """Whether the request being offered is sampled and there is room (else it counts as dropped)."""
        credit = self._credit + self.sample
        if credit < 1.0:
            self._credit = credit
            return False
        self._credit = credit - 1.0
        if self.max_rate:
            now = time.monotonic()
            tokens = min(self._burst, self._tokens + (now - self._refilled) * self.max_rate)
            self._refilled = now
            if tokens < 1.0:
                self._tokens = tokens
                return False
            self._tokens = tokens - 1.0
        if len(self._queue) >= self.capacity:
            self._dropped.value += 1
            return False
        return True

    def start(self) -> None:
        """Start the observers' thread (nothing to do without observers)."""
        if self._thread is not None or not self.observers:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="augury-monitor", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Hand what is queued to the observers, stop their thread (waits at most `timeout_s`), then call
        the `on_close` callables."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout_s)
            if thread.is_alive():
                log.warning("the monitor's observers did not finish within %.0f s; left behind", timeout_s)
        for close in self._on_close:
            close()

    def drain(self) -> None:
        """Hand every queued observation to the observers now, `CHUNK` at a time (the thread's work;
        tests call it too). The GIL is let go between chunks (`yield_gil`, see the module docstring)."""
        queue = self._queue
        left = len(queue)
        while True:
            taken = [queue.popleft() for _ in range(min(left, CHUNK))]
            left -= len(taken)
            for observer in self.observers:
                try:
                    observer.observe(taken)
                except Exception:  # an observer's bug must not stop the others, or the next drain
                    log.exception("monitor observer %s failed", type(observer).__name__)
                yield_gil()
            if left <= 0:
                return

    def _run(self) -> None:
        while not self._stop.wait(DRAIN_EVERY_S):
            self.drain()
        self.drain()
