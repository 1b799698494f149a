"""The tap's sampling: a share of requests, then at most `max_rate` a second."""

from __future__ import annotations

import time
from collections.abc import Sequence

from augury.monitor.accumulators import CounterFamily
from augury.monitor.tap import Observation, Tap


class Nothing:
    def observe(self, observations: Sequence[Observation]) -> None:
        return None


def test_max_rate_caps_the_requests_offered_per_second() -> None:
    samples = CounterFamily("s", "samples", ["result"])
    tap = Tap([Nothing()], samples, max_rate=100.0, capacity=10**6)
    started = time.monotonic()
    offered = 0
    while time.monotonic() - started < 0.3:
        tap.offer((), ())
        offered += 1
    elapsed = time.monotonic() - started
    queued = samples.labels("queued").value
    assert offered > 1000  # (far more than the cap)
    assert 10 <= queued <= 10 + elapsed * 100 + 1  # a tenth of a second's burst, then 100 a second


def test_no_cap_and_a_share() -> None:
    samples = CounterFamily("s", "samples", ["result"])
    tap = Tap([Nothing()], samples, sample=0.5, max_rate=0.0, capacity=10**6)
    for _ in range(1000):
        tap.offer((), ())
    assert samples.labels("queued").value == 500
