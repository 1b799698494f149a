"""The server's own pauses, found from when requests were sent and answered: per request, not per second."""

from __future__ import annotations

import numpy as np
import pytest

from augury.advise.stalls import NO_PAUSES, Pauses, Stalls, agree, excess, pauses_from, settled
from augury.errors import ConfigError


def one_worker(rate: float, seconds: float, per_request: float, pause_s: float, stalls_per_s: float,
               seed: int, stall_s: float = 0.002) -> tuple[list[float], list[float], float]:
    """Send and answer times of a FIFO server (0.1 ms a request, 0.2 ms of round trip): a request brings
    a pause of `pause_s` with probability `per_request`; stalls of `stall_s` come `stalls_per_s` a second."""
    rng = np.random.default_rng(seed)
    sent = np.cumsum(rng.exponential(1 / rate, int(rate * seconds)))
    stall_at = np.cumsum(rng.exponential(1 / stalls_per_s, int(stalls_per_s * seconds * 2) + 1))
    free, out, k = 0.0, [], 0
    for t in sent:
        start = max(t, free)
        while k < len(stall_at) and stall_at[k] < start:  # a stall that began before: wait for its end
            start = max(start, stall_at[k] + stall_s)
            k += 1
        free = start + 0.0001 + (pause_s if rng.random() < per_request else 0.0)
        out.append(free + 0.0002)
    return sent.tolist(), out, rate * (0.0001 + per_request * pause_s)


def test_pauses_are_counted_per_request_and_stalls_left_to_the_clock() -> None:
    light = one_worker(400, 5.0, 0.015, 0.0008, 3.0, 1)
    heavy = one_worker(3000, 2.0, 0.015, 0.0008, 3.0, 2)
    found = pauses_from([light, heavy])
    assert found.per_request == pytest.approx(0.015, rel=0.25)
    assert np.median(found.durations_s) == pytest.approx(0.0008, rel=0.1)
    assert found.mean_s == pytest.approx(found.per_request * np.mean(found.durations_s))
    # no pauses, only stalls: a few a second at both rates, none per request
    quiet = pauses_from([one_worker(400, 5.0, 0.0, 0.0, 3.0, 3), one_worker(3000, 2.0, 0.0, 0.0, 3.0, 4)])
    assert quiet.per_request < 0.001


def test_stalls_the_probe_counts_are_not_counted_again() -> None:
    """A stall shows as a pause more often at a higher rate (the server is busier, more requests arrive
    while it lasts): without the probe's stalls taken out, 40 stalls a second of 0.8 ms would look like
    pauses on requests. Events over 1 ms follow the clock and are never counted per request."""
    phases = [one_worker(400, 5.0, 0.0, 0.0, 40.0, 6, 0.0008),
              one_worker(3000, 3.0, 0.0, 0.0, 40.0, 7, 0.0008)]
    assert pauses_from(phases).per_request > 0.003
    assert pauses_from(phases, Stalls(40.0, (0.0008,))).per_request < 0.001
    long = [one_worker(400, 5.0, 0.0, 0.0, 40.0, 6), one_worker(3000, 3.0, 0.0, 0.0, 40.0, 7)]
    assert pauses_from(long).per_request < 0.001 and pauses_from(long, Stalls(40.0, (0.002,))) == NO_PAUSES


def test_a_pause_shows_once_not_on_every_request_behind_it() -> None:
    # five requests sent 0.1 ms apart; the first held 1 ms: those behind it waited, but took as long as usual
    sent = [i * 0.01 for i in range(40)] + [0.5 + i * 0.0001 for i in range(5)]
    received = [t + 0.0003 for t in sent[:40]] + [0.5 + 0.0013, 0.5 + 0.0014, 0.5 + 0.0015, 0.5 + 0.0016,
                                                   0.5 + 0.0017]
    over, rate = excess(sent, received)
    assert rate > 0 and int(np.sum(over > 0.0003)) == 1


def test_too_little_to_tell_is_no_pauses() -> None:
    one = one_worker(400, 2.0, 0.02, 0.001, 1.0, 5)
    assert pauses_from([one]) == NO_PAUSES  # one rate cannot tell requests from the clock
    assert pauses_from([one, one]) == NO_PAUSES
    with pytest.raises(ConfigError):
        Pauses(0.1, ())
    with pytest.raises(ConfigError):
        Pauses(1.5, (0.001,))


def test_probes_that_disagree_keep_the_median_and_say_so() -> None:
    """issue 15: a calibration taken as the machine's load changed predicted p99 15-63 ms against 0.7-1.4
    ms measured minutes later. Probes within 3 x of each other are one probe; others keep the median."""
    quiet, busy = Stalls(4.0, (0.0005,) * 4), Stalls(40.0, (0.001,) * 40)
    assert agree([quiet, Stalls(8.0, (0.0005,) * 8)]) and not agree([quiet, busy])
    assert agree([Stalls(0.0, ()), Stalls(2.0, (0.0004,) * 2)])  # both well under 0.5 % of the time
    # one quiet calibration's probes, 0.15 % and 0.6 %: chance in 1 s probes, not a change
    assert agree([Stalls(3.0, (0.0005,) * 3), Stalls(6.0, (0.001,) * 6)])
    merged, note = settled([quiet, Stalls(8.0, (0.0005,) * 8)])
    assert note == "" and merged.per_s == 6.0 and len(merged.durations_s) == 12
    kept, note = settled([quiet, busy, Stalls(6.0, (0.0005,) * 6)])
    assert kept == Stalls(6.0, (0.0005,) * 6) and "3 probes" in note and "median" in note
