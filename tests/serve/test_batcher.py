"""The dynamic batcher against tiny real model functions (no mocks, no pytest-asyncio)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from augury.errors import ConfigError, DeadlineExceeded, InputError, OverloadedError, PredictionError
from augury.serve.batcher import Batcher, BatchObserver


class Doubler:
    """y = 2x per row, recording the rows of every call. `gate`, when given, holds each call until set."""

    def __init__(self, sleep_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.calls: list[list[float]] = []
        self.sleep_s = sleep_s
        self.gate = gate
        self.started = threading.Event()

    def __call__(self, rows: list[float]) -> list[float]:
        self.calls.append(list(rows))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test forgot to open the gate"
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if -1.0 in self.calls[-1]:
            raise ValueError("marker row -1 cannot be scored")
        return [2 * x for x in rows]

    @property
    def seen(self) -> list[float]:
        return [x for call in self.calls for x in call]


class Recorder(BatchObserver):
    def __init__(self) -> None:
        self.batches: list[tuple[int, int]] = []
        self.failed: list[int] = []
        self.waits: list[float] = []
        self.shed_count = 0
        self.missed = 0

    def batch_scored(self, rows: int, requests: int, inference_s: float) -> None:
        assert inference_s >= 0
        self.batches.append((rows, requests))

    def batch_failed(self, requests: int, error: BaseException) -> None:
        self.failed.append(requests)

    def queue_wait(self, seconds: float) -> None:
        self.waits.append(seconds)

    def shed(self) -> None:
        self.shed_count += 1

    def deadline_missed(self) -> None:
        self.missed += 1


def req(*xs: float) -> list[float]:
    return list(xs)


def ys(out: list[float]) -> list[float]:
    assert isinstance(out, list)
    return out


def run(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 10))


async def until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not cond():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


async def settle(*aws: Awaitable[Any]) -> list[Any]:
    return await asyncio.gather(*aws, return_exceptions=True)


def test_concurrent_requests_are_coalesced_and_get_their_own_rows() -> None:
    model, obs = Doubler(), Recorder()

    async def main() -> None:
        b = Batcher(model, max_batch_size=8, max_delay_ms=20, observer=obs)
        outs = await asyncio.gather(*(b.submit(req(float(i))) for i in range(40)))
        assert [ys(o) for o in outs] == [[2.0 * i] for i in range(40)]
        await b.close()

    run(main)
    assert len(model.calls) < 40
    assert all(len(c) <= 8 for c in model.calls)
    assert sum(r for r, _ in obs.batches) == 40 and len(obs.batches) == len(model.calls)
    assert len(obs.waits) == 40 and all(w >= 0 for w in obs.waits)


def test_multi_row_requests_are_sliced_back_in_order() -> None:
    model = Doubler()

    async def main() -> None:
        b = Batcher(model, max_batch_size=64, max_delay_ms=5)
        batches = [req(*[10.0 * n + i for i in range(n)]) for n in range(1, 8)]
        outs = await asyncio.gather(*(b.submit(x) for x in batches))
        for x, out in zip(batches, outs, strict=True):
            assert ys(out) == [2 * v for v in x]
        await b.close()

    run(main)
    assert len(model.calls) == 1


def test_single_request_does_not_wait_for_a_full_batch() -> None:
    async def main() -> None:
        b = Batcher(Doubler(), max_batch_size=64, max_delay_ms=10)
        t0 = time.monotonic()
        assert ys(await b.submit(req(3.0))) == [6.0]
        assert time.monotonic() - t0 < 1.0  # loose: max_delay_ms plus model time, not a full batch
        await b.close()

    run(main)


def test_requests_accumulate_while_the_model_is_busy() -> None:
    model = Doubler(sleep_s=0.05)

    async def main() -> None:
        b = Batcher(model, max_batch_size=64, max_delay_ms=1)
        first = asyncio.ensure_future(b.submit(req(0.0)))
        await until(model.started.is_set)
        rest = [b.submit(req(float(i))) for i in range(1, 21)]
        outs = await asyncio.gather(first, *rest)
        assert [ys(o) for o in outs] == [[2.0 * i] for i in range(21)]
        await b.close()

    run(main)
    assert [len(c) for c in model.calls] == [1, 20]


def test_failing_batch_fails_only_its_requests_and_the_loop_goes_on() -> None:
    model, obs = Doubler(), Recorder()

    async def main() -> None:
        b = Batcher(model, max_batch_size=3, max_delay_ms=20, observer=obs)
        results = await settle(*(b.submit(req(x)) for x in [1, -1, 2, 3, 4, 5]))
        for r in results[:3]:
            assert isinstance(r, PredictionError) and "ValueError" in str(r)
            assert isinstance(r.__cause__, ValueError)
        assert [ys(r) for r in results[3:]] == [[6.0], [8.0], [10.0]]
        assert ys(await b.submit(req(7.0))) == [14.0]
        await b.close()

    run(main)
    assert obs.failed == [3]


def test_wrong_row_count_fails_every_request_of_the_batch() -> None:
    def drops_a_row(rows: list[float]) -> list[float]:
        return rows[1:]

    async def main() -> None:
        b = Batcher(drops_a_row, max_batch_size=8, max_delay_ms=20)
        results = await settle(*(b.submit(req(float(i), 1.0)) for i in range(3)))
        assert all(isinstance(r, PredictionError) and "5 rows for 6 inputs" in str(r) for r in results)
        await b.close()

    run(main)


def test_full_queue_sheds_at_once_with_retry_after() -> None:
    gate, obs = threading.Event(), Recorder()
    model = Doubler(gate=gate)

    async def main() -> None:
        b = Batcher(model, max_batch_size=1, max_delay_ms=0, max_queue=2, observer=obs)
        running = asyncio.ensure_future(b.submit(req(0.0)))
        await until(model.started.is_set)
        others = [asyncio.ensure_future(b.submit(req(1.0)))]
        await asyncio.sleep(0.02)
        assert b.queue_depth == 0  # formed into the next batch, waiting for the model
        others += [asyncio.ensure_future(b.submit(req(float(i)))) for i in (2, 3)]
        await until(lambda: b.queue_depth == 2)
        t0 = time.monotonic()
        with pytest.raises(OverloadedError) as info:
            await b.submit(req(9.0))
        assert time.monotonic() - t0 < 0.5
        assert info.value.retry_after_s >= 1.0
        gate.set()
        outs = await asyncio.gather(running, *others)
        assert [ys(o) for o in outs] == [[0.0], [2.0], [4.0], [6.0]]
        await b.close()

    run(main)
    assert obs.shed_count == 1 and 9.0 not in model.seen


def test_expired_request_is_never_scored() -> None:
    gate, obs = threading.Event(), Recorder()
    model = Doubler(gate=gate)

    async def main() -> None:
        b = Batcher(model, max_batch_size=1, max_delay_ms=0, observer=obs)
        running = asyncio.ensure_future(b.submit(req(0.0)))
        await until(model.started.is_set)
        with pytest.raises(DeadlineExceeded, match=r"ms late"):
            await b.submit(req(5.0), deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExceeded, match=r"ms before it was queued"):
            await b.submit(req(6.0), deadline=time.monotonic() - 0.01)
        gate.set()
        assert ys(await running) == [0.0]
        assert ys(await b.submit(req(7.0), deadline=time.monotonic() + 5)) == [14.0]
        await b.close()

    run(main)
    assert model.seen == [0.0, 7.0]
    assert obs.missed == 2


def test_deadline_passing_during_the_wait_timer() -> None:
    model = Doubler()

    async def main() -> None:
        b = Batcher(model, max_batch_size=64, max_delay_ms=300)
        late = b.submit(req(1.0), deadline=time.monotonic() + 0.02)
        results = await settle(late, b.submit(req(2.0)))
        assert isinstance(results[0], DeadlineExceeded)
        assert ys(results[1]) == [4.0]
        await b.close()

    run(main)
    assert model.seen == [2.0]


def test_cancelled_request_is_skipped_without_breaking_the_batch() -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)

    async def main() -> None:
        b = Batcher(model, max_batch_size=8, max_delay_ms=0)
        running = asyncio.ensure_future(b.submit(req(0.0)))
        await until(model.started.is_set)
        waiting = [asyncio.ensure_future(b.submit(req(float(i)))) for i in (1, 2, 3, 4)]
        await asyncio.sleep(0.02)
        assert b.queue_depth == 0  # all four formed into the next batch, waiting for the model
        waiting[1].cancel()
        waiting[3].cancel()
        gate.set()
        results = await settle(running, *waiting)
        assert ys(results[0]) == [0.0] and ys(results[1]) == [2.0] and ys(results[3]) == [6.0]
        assert isinstance(results[2], asyncio.CancelledError)
        assert ys(await b.submit(req(5.0))) == [10.0]
        await b.close()

    run(main)
    assert model.calls == [[0.0], [1.0, 3.0], [5.0]]


def test_cancelled_request_leaves_the_queue() -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)

    async def main() -> None:
        b = Batcher(model, max_batch_size=1, max_delay_ms=0)
        running = asyncio.ensure_future(b.submit(req(0.0)))
        await until(model.started.is_set)
        waiting = [asyncio.ensure_future(b.submit(req(float(i)))) for i in (1, 2, 3)]
        await until(lambda: b.queue_depth == 2)
        waiting[2].cancel()
        await until(lambda: b.queue_depth == 1)
        gate.set()
        await settle(running, *waiting)
        await b.close()

    run(main)
    assert 3.0 not in model.seen


def test_close_fails_waiters_lets_the_running_batch_finish_and_is_idempotent() -> None:
    gate = threading.Event()
    model = Doubler(gate=gate)

    async def main() -> None:
        b = Batcher(model, max_batch_size=1, max_delay_ms=0)
        running = asyncio.ensure_future(b.submit(req(0.0)))
        await until(model.started.is_set)
        waiting = [asyncio.ensure_future(b.submit(req(float(i)))) for i in (1, 2, 3)]
        await until(lambda: b.queue_depth == 2)
        closing = asyncio.ensure_future(b.close())
        results = await settle(*waiting)
        assert all(isinstance(r, OverloadedError) and "shutting down" in str(r) for r in results)
        assert not closing.done()  # still waiting for the batch being scored
        gate.set()
        assert ys(await running) == [0.0]
        await closing
        await b.close()
        with pytest.raises(OverloadedError, match="shutting down"):
            await b.submit(req(4.0))

    run(main)
    assert model.seen == [0.0]


def test_close_before_start_and_twice() -> None:
    async def main() -> None:
        b = Batcher(Doubler())
        await b.close()
        await b.close()

    run(main)


def test_request_larger_than_max_batch_size_runs_alone() -> None:
    model = Doubler()

    async def main() -> None:
        b = Batcher(model, max_batch_size=4, max_delay_ms=20)
        big = req(*[float(i) for i in range(10)])
        outs = await asyncio.gather(b.submit(req(1.0, 2.0)), b.submit(big), b.submit(req(3.0, 4.0)))
        assert ys(outs[1]) == [2.0 * i for i in range(10)]
        assert ys(outs[0]) == [2.0, 4.0] and ys(outs[2]) == [6.0, 8.0]
        await b.close()

    run(main)
    assert [len(c) for c in model.calls] == [2, 10, 2]


def test_requests_of_different_groups_are_not_mixed() -> None:
    model = Doubler()

    async def main() -> None:
        b = Batcher(model, max_batch_size=64, max_delay_ms=20)
        ints = b.submit([5], group="ints")
        outs = await asyncio.gather(b.submit(req(1.0)), ints, b.submit(req(2.0)))
        assert [ys(o) for o in outs] == [[2.0], [10], [4.0]]
        await b.close()

    run(main)
    assert model.calls == [[1.0], [5], [2.0]]


def test_predict_returning_other_than_a_list_fails_the_batch() -> None:
    def not_a_list(rows: list[float]) -> Any:
        return {"y": rows}

    async def main() -> None:
        b = Batcher(not_a_list, max_batch_size=8, max_delay_ms=5)
        results = await settle(b.submit(req(1.0)), b.submit(req(2.0)))
        assert all(isinstance(r, PredictionError) and "expected a list" in str(r) for r in results)
        await b.close()

    run(main)


def test_observer_that_raises_does_not_break_batching() -> None:
    class Broken(BatchObserver):
        def batch_scored(self, rows: int, requests: int, inference_s: float) -> None:
            raise RuntimeError("metrics backend down")

    async def main() -> None:
        b = Batcher(Doubler(), observer=Broken())
        assert ys(await b.submit(req(1.0))) == [2.0]
        assert ys(await b.submit(req(2.0))) == [4.0]
        await b.close()

    run(main)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        Batcher(Doubler(), max_batch_size=0)
    with pytest.raises(ConfigError):
        Batcher(Doubler(), max_delay_ms=-1)
    with pytest.raises(RuntimeError):
        Batcher(Doubler()).start()  # no running event loop

    async def main() -> None:
        b = Batcher(Doubler())
        with pytest.raises(InputError):
            await b.submit(req())
        await b.close()

    run(main)


class ThreadNoting(Doubler):
    """A Doubler that notes the thread of every call, sleeping `sleeps[i]` seconds in call i."""

    def __init__(self, sleeps: list[float]) -> None:
        super().__init__()
        self.sleeps = sleeps
        self.threads: list[int] = []

    def __call__(self, rows: list[float]) -> list[float]:
        self.threads.append(threading.get_ident())
        time.sleep(self.sleeps[min(len(self.threads) - 1, len(self.sleeps) - 1)])
        return super().__call__(rows)


def test_a_fast_model_is_called_on_the_loop_and_a_slow_one_goes_back_to_its_thread() -> None:
    # fast first batch (on the model thread: nothing measured yet), fast second (in place), then slow
    # ones, which push the average past the threshold and so return to the model thread
    model = ThreadNoting([0.0, 0.0, 0.05, 0.05, 0.05, 0.05])
    loop_thread: list[int] = []

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        b = Batcher(model, inline_below_ms=5.0)
        for i in range(6):
            assert ys(await b.submit(req(float(i)))) == [2.0 * i]
        await b.close()

    run(main)
    on_loop = [t == loop_thread[0] for t in model.threads]
    assert on_loop[:3] == [False, True, True]  # the third is slow, but the average said fast
    assert not on_loop[-1]  # the average caught up: back on the model thread


def test_inline_scoring_off_keeps_every_call_on_the_model_thread() -> None:
    model = ThreadNoting([0.0])

    async def main() -> None:
        b = Batcher(model, inline_below_ms=0)
        for i in range(5):
            await b.submit(req(float(i)))
        assert threading.get_ident() not in model.threads
        await b.close()

    run(main)


def test_a_failing_model_called_in_place_fails_only_its_batch() -> None:
    model = ThreadNoting([0.0])

    async def main() -> None:
        b = Batcher(model, inline_below_ms=5.0)
        assert ys(await b.submit(req(1.0))) == [2.0]
        with pytest.raises(PredictionError, match="marker row"):
            await b.submit(req(-1.0))
        assert ys(await b.submit(req(3.0))) == [6.0]
        await b.close()

    run(main)


def test_bad_inline_threshold() -> None:
    with pytest.raises(ConfigError):
        Batcher(Doubler(), inline_below_ms=-1)
