"""The batcher simulation: its batching rule on hand-made arrivals, and closed-form sanity checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from augury.advise.queueing import BatcherSettings, ServiceCurve, run_batcher, simulate
from augury.advise.stalls import NO_PAUSES, Pauses, Stalls, Timeline
from augury.errors import ConfigError

ONE_MS = ServiceCurve((1,), (0.001,))


def test_waits_max_delay_from_the_first_request_then_sends() -> None:
    # 3 requests within the 2 ms window go together; the 4th, alone, waits its own 2 ms
    ends, sizes = run_batcher([0.0, 0.0005, 0.001, 0.010], ServiceCurve((1, 4), (0.001, 0.001)),
                              BatcherSettings(64, 2.0))
    assert sizes == [3, 1]
    assert ends == pytest.approx([0.003, 0.013])


def test_a_full_batch_goes_at_once() -> None:
    ends, sizes = run_batcher([0.0, 0.0001, 0.0002, 0.0003, 0.0004], ServiceCurve((1, 4), (0.001, 0.001)),
                              BatcherSettings(2, 50.0))
    assert sizes == [2, 2, 1]
    assert ends[0] == pytest.approx(0.0001 + 0.001)  # sent when the second arrived, not after 50 ms


def test_while_the_model_is_busy_the_next_batch_grows() -> None:
    # one batch in the model at a time: what arrives meanwhile goes in one batch when the model frees
    ten_ms = ServiceCurve((1, 8), (0.010, 0.010))
    ends, sizes = run_batcher([0.0, 0.001, 0.002, 0.003], ten_ms, BatcherSettings(64, 0.0))
    assert sizes == [1, 3]
    assert ends == pytest.approx([0.010, 0.020])
    _, capped = run_batcher([0.0, 0.001, 0.002, 0.003], ten_ms, BatcherSettings(2, 0.0))
    assert capped == [1, 2, 1]


def test_low_load_batch_of_one_is_the_service_time() -> None:
    # M/D/1 at 5 % load: almost nobody waits, so the median latency is the service time
    r = simulate(ONE_MS, 50.0, BatcherSettings(1, 0.0), requests=20_000)
    assert r.stable and r.p50_s == pytest.approx(0.001, rel=0.01)
    assert r.mean_batch == 1.0


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mean_latency_matches_m_d_1(rho: float) -> None:
    # Pollaczek-Khinchine for deterministic service: W = D + rho D / (2 (1 - rho))
    r = simulate(ONE_MS, rho / 0.001, BatcherSettings(1, 0.0), requests=60_000)
    expected = 0.001 + rho * 0.001 / (2 * (1 - rho))
    assert r.mean_s == pytest.approx(expected, rel=0.05)
    assert r.utilisation == pytest.approx(rho) and r.busy == pytest.approx(rho, rel=0.03)


def test_utilisation_at_or_past_one_does_not_hold() -> None:
    r = simulate(ONE_MS, 1000.0, BatcherSettings(1, 0.0))
    assert not r.stable and math.isinf(r.p99_s) and r.utilisation == pytest.approx(1.0)
    assert not r.holds(10.0)
    # the same load on two workers is served
    assert simulate(ONE_MS, 1000.0, BatcherSettings(1, 0.0), workers=2).holds(0.05)


def test_batching_raises_capacity_when_calls_have_a_fixed_cost() -> None:
    curve = ServiceCurve((1, 64), (0.001, 0.001 + 63 * 0.00005))  # 1 ms per call + 50 µs per row
    assert not simulate(curve, 2000, BatcherSettings(1, 0.0)).stable
    r = simulate(curve, 2000, BatcherSettings(64, 0.0))
    assert r.stable and r.mean_batch > 1 and r.p99_s < 0.02


def test_delay_adds_latency_at_low_load() -> None:
    r = simulate(ONE_MS, 10.0, BatcherSettings(64, 5.0))
    assert r.p50_s == pytest.approx(0.006, rel=0.02)


def test_overhead_is_added_and_runs_are_deterministic() -> None:
    a = simulate(ONE_MS, 300.0, BatcherSettings(8, 1.0), overhead_s=0.0005)
    b = simulate(ONE_MS, 300.0, BatcherSettings(8, 1.0))
    assert a.p50_s - b.p50_s == pytest.approx(0.0005)
    assert simulate(ONE_MS, 300.0, BatcherSettings(8, 1.0)) == b


def test_jitter_widens_the_tail() -> None:
    jittery = ServiceCurve((1,), (0.001,), ((0.9, 1.0, 1.0, 1.0, 3.0),))
    alone = BatcherSettings(1, 0.0)
    assert simulate(jittery, 50.0, alone).p99_s > 2.5e-3 > simulate(ONE_MS, 50.0, alone).p99_s


def test_curve_interpolates_and_extrapolates() -> None:
    curve = ServiceCurve((1, 2, 4), (0.001, 0.0015, 0.0025))
    assert curve.time(3) == pytest.approx(0.002)
    assert curve.time(8) == pytest.approx(0.0045)  # along the last segment
    assert ServiceCurve((1,), (0.002,)).time(4) == pytest.approx(0.008)  # one point: proportional


@pytest.mark.parametrize("bad", [
    lambda: ServiceCurve((), ()),
    lambda: ServiceCurve((2, 1), (0.1, 0.2)),
    lambda: ServiceCurve((1,), (0.0,)),
    lambda: BatcherSettings(0, 1.0),
    lambda: simulate(ONE_MS, 0.0),
    lambda: simulate(ONE_MS, -5.0),
])
def test_bad_arguments(bad: object) -> None:
    with pytest.raises(ConfigError):
        bad()  # type: ignore[operator]


def test_stalls_widen_the_tail_more_as_the_core_gets_busier() -> None:
    """issue 15: the measured p99 rose above the prediction as the server's core got busier; a stall
    delays one request at light load, and a backlog that takes d * rho / (1 - rho) to clear at rho."""
    plain = ServiceCurve((1, 8), (0.0005, 0.0012), overhead_s=(0.0002, 0.0004))
    stalled = ServiceCurve((1, 8), (0.0005, 0.0012), overhead_s=(0.0002, 0.0004),
                           stalls=Stalls(20.0, (0.002, 0.004)))
    settings = BatcherSettings(8, 0.0)
    growth = []
    for qps in (200, 1200, 3000):
        a, b = (simulate(curve, qps, settings, requests=20_000) for curve in (plain, stalled))
        assert b.p99_s > a.p99_s and b.p50_s >= a.p50_s
        growth.append(b.p99_s - a.p99_s)
    assert growth[0] < growth[1] < growth[2]
    assert plain.overhead(4) == pytest.approx(0.0002 + 3 * 0.0002 / 7)
    assert ServiceCurve((1,), (0.001,)).overhead(4) == 0.0


def test_a_stall_holds_the_core_and_the_interrupted_work_resumes_after_it() -> None:
    core = Timeline(Stalls(1.0, (0.5,)), 0.0, np.random.default_rng(0))
    core.starts, core.ends = [1.0, 3.0], [1.5, 3.2]
    assert core.ready(0.9) == 0.9 and core.ready(1.2) == 1.5 and core.ready(3.1) == pytest.approx(3.2)
    assert core.finish(0.5, 0.4) == pytest.approx(0.9)  # no stall in the way
    assert core.finish(0.5, 1.0) == pytest.approx(2.0)  # 0.5 before the stall, 0.5 after it
    assert core.finish(0.5, 2.8) == pytest.approx(4.0)  # 0.5, the stall, 1.5, the next, 0.8
    assert Stalls(10.0, (0.01,)).share == pytest.approx(0.1 / 1.1)
    with pytest.raises(ConfigError):
        Stalls(5.0, ())



def test_a_batch_that_finds_the_worker_idle_pays_its_wake_up() -> None:
    curve = ServiceCurve((1, 4), (0.001, 0.001), wake_s=0.0005)
    # the first request wakes the worker; the second arrives while it works (no wake-up); the third
    # after it went idle again
    ends, sizes = run_batcher([0.0, 0.001, 0.010], curve, BatcherSettings(64, 0.0))
    assert sizes == [1, 1, 1]
    assert ends == pytest.approx([0.0015, 0.0025, 0.0115])


def test_pauses_come_with_requests_so_they_widen_the_tail_more_as_the_rate_grows() -> None:
    """issue 15: the server's own pauses (0.3-1 ms, 1.3-1.5 % of requests on the 2-core VM) follow its
    work: at a higher rate more of them, each on a busier core."""
    plain = ServiceCurve((1, 8), (0.0002, 0.0006))
    paused = ServiceCurve((1, 8), (0.0002, 0.0006), pauses=Pauses(0.015, (0.0004, 0.0006, 0.001)))
    settings = BatcherSettings(8, 0.0)
    growth = []
    for qps in (500, 1500, 3000):
        a, b = (simulate(curve, qps, settings, requests=20_000) for curve in (plain, paused))
        assert b.p99_s > a.p99_s
        growth.append(b.p99_s - a.p99_s)
    assert growth[0] < growth[2]
    assert simulate(paused, 1500, settings) == simulate(paused, 1500, settings)  # deterministic
    # without pauses, the same draws as before they existed
    same = ServiceCurve((1, 8), (0.0002, 0.0006), pauses=NO_PAUSES)
    assert simulate(same, 1500, settings) == simulate(plain, 1500, settings)


def test_a_batch_takes_the_pauses_its_requests_bring() -> None:
    """issue 15: pauses come with requests, so a batch of 256 carries 256 requests' share of them. Drawn
    at most once a batch, the advisor put an HGB model's capacity at 156,300 requests a second per core,
    where its server's p99 passed 20 ms past about 20,000."""
    curve = ServiceCurve((1, 256), (1e-4, 1e-3), pauses=Pauses(0.05, (0.001,)))
    ends, sizes = run_batcher([0.0] * 2560, curve, BatcherSettings(256, 0.0), np.random.default_rng(0))
    assert sizes == [256] * 10
    # ten calls of 1 ms, and 2,560 requests bringing a 1 ms pause each with a chance of 5 %: 128 ms
    assert ends[-1] == pytest.approx(0.010 + 2560 * 0.05 * 0.001, rel=0.15)


def test_capacity_counts_the_requests_pauses_and_the_cores_stalls() -> None:
    plain = ServiceCurve((1, 256), (1e-4, 1e-3))
    paused = ServiceCurve((1, 256), (1e-4, 1e-3), pauses=Pauses(0.05, (0.001,)),
                          stalls=Stalls(10.0, (0.01,)))  # 10 % of each second stalls: 9.1 % of the time
    assert plain.capacity(256) == pytest.approx(256_000)
    assert paused.capacity(256) == pytest.approx(256 / (1e-3 + 256 * 5e-5) * (1 - 0.1 / 1.1))
    # past that capacity the queue grows without bound: not simulated
    assert not simulate(paused, paused.capacity(256) * 1.01, BatcherSettings(256, 0.0)).stable
