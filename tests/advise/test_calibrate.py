"""Calibration: a real `augury serve` measured on this machine, kept in a file, read back, and used."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from advise_synthetic import FAST, measurements

from augury.advise import Goals, predict_latency, recommend
from augury.advise.calibrate import _fit, calibrate
from augury.advise.load import Phase
from augury.advise.overheads import BUILT_IN, FORMAT, ServingOverheads, default_path, load, resolve, save
from augury.advise.stalls import NO_PAUSES, Pauses, Stalls
from augury.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def measured() -> ServingOverheads:
    return calibrate(phase_s=0.6)


def test_calibration_measures_a_real_server(measured: ServingOverheads) -> None:
    assert measured.calibrated and "calibrated on this machine" in measured.source
    # a server's own work per request is tens to hundreds of microseconds; per batch (woken from idle,
    # or not: the fit may put it all in the wake-up) more than nothing
    assert 1e-6 < measured.per_request_s < 5e-3
    for batch, wake in ((measured.per_batch_inline_s, measured.per_wake_inline_s),
                        (measured.per_batch_hop_s, measured.per_wake_hop_s)):
        assert batch >= 0 and wake >= 0 and 0 < batch + wake < 5e-3
    assert 1e-6 < measured.round_trip_s < 50e-3
    details = dict(measured.details)
    assert details["inline_full_rows_per_call"] > details["inline_light_rows_per_call"]  # batches formed
    # the stall probes ran (before, between and after the servers' load, and more if they disagreed):
    # however busy the machine, the core was stalled a small share of the time
    assert measured.stalls.per_s >= 0 and measured.stalls.share < 0.5
    probes = [k for k in details if k.startswith("stall_probe_")]
    assert 3 <= len(probes) <= 5 and (len(probes) == 3) == (measured.notes == ())
    # the loaded phases were timed by the kernel, and gave the server's own pauses (some, or none)
    assert details["timed_by_the_kernel"] == 1.0
    for pauses in (measured.pauses_inline, measured.pauses_hop):
        assert 0 <= pauses.per_request < 0.5 and all(d > 0 for d in pauses.durations_s)


def test_kept_in_a_file_and_read_back(measured: ServingOverheads, tmp_path: Path) -> None:
    path = save(measured, tmp_path / "sub" / "cal.json")
    back = load(path)
    assert back.per_request_s == measured.per_request_s and back.path == str(path) and back.calibrated
    assert back.stalls == measured.stalls
    assert (back.pauses_inline, back.pauses_hop) == (measured.pauses_inline, measured.pauses_hop)
    noted = replace(measured, notes=("the machine's load changed during calibration",))
    assert load(save(noted, tmp_path / "noted.json")).notes == noted.notes
    assert resolve(path) == back
    assert resolve(None) == BUILT_IN  # the conftest points the default path at a missing file


def test_later_advice_uses_it_and_says_so(measured: ServingOverheads) -> None:
    m = measurements(FAST, 1000)
    built_in = recommend(m, Goals(100, 50, 3600, 1))
    mine = recommend(replace(m, serving=measured), Goals(100, 50, 3600, 1))
    assert built_in.to_dict()["serving_overheads"]["calibrated"] is False
    assert mine.to_dict()["serving_overheads"]["source"] == measured.source
    trip = predict_latency(m.model, 10.0, overheads=measured)
    none = predict_latency(m.model, 10.0, overheads=measured, extra_s=0.0)
    assert trip.p50_s == pytest.approx(none.p50_s + measured.round_trip_s)


def test_bad_calibration_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no calibration file"):
        resolve(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        load(bad)
    bad.write_text(json.dumps({"format": 99}))
    with pytest.raises(InputError, match="calibrate"):
        load(bad)
    bad.write_text(json.dumps({"format": 1}))  # a spread where stalls are now: calibrate again
    with pytest.raises(InputError, match="calibrate"):
        load(bad)
    bad.write_text(json.dumps({"format": 2}))  # no pauses: it would predict as optimistically as before
    with pytest.raises(InputError, match="run `augury advise --calibrate` again"):
        load(bad)
    bad.write_text(json.dumps({"format": FORMAT, "per_batch_inline_s": "x"}))
    with pytest.raises(InputError, match="missing or not a number"):
        load(bad)
    good = {"format": FORMAT, "per_batch_inline_s": 1e-4, "per_batch_hop_s": 1e-4, "per_request_s": 1e-5,
            "round_trip_s": 1e-4}
    bad.write_text(json.dumps({**good, "stalls": {"per_s": 3.0, "durations_s": []}}))
    with pytest.raises(InputError, match="stalls at a rate need durations"):
        load(bad)
    bad.write_text(json.dumps({**good, "stalls": {"per_s": 3.0, "durations_s": [0.002]}}))
    assert load(bad).stalls == Stalls(3.0, (0.002,))
    bad.write_text(json.dumps({**good, "pauses_inline": {"per_request": 0.02, "durations_s": []}}))
    with pytest.raises(InputError, match="pauses need durations"):
        load(bad)
    bad.write_text(json.dumps({**good, "pauses_hop": {"per_request": 0.02, "durations_s": [0.0005]}}))
    assert load(bad).pauses_for(1.0) == Pauses(0.02, (0.0005,)) and load(bad).pauses_for(1e-5) == NO_PAUSES


def test_the_default_path_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUGURY_CALIBRATION")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "augury" / "serve-overheads.json"


def test_the_fit_tells_wake_ups_from_batches() -> None:
    """rest = per_request + per_batch / rows + per_wake * (1 - busy), through three phases; when noise
    makes a figure negative, the wake-up folds into the per-batch cost (the two-phase fit)."""
    r, c, w = 40e-6, 50e-6, 120e-6

    def phase(rows: float, busy: float, closed: bool = False) -> Phase:
        n = 1000
        cpu = (r + c / rows + w * (1 - busy)) * n + 0.01
        return Phase(n, cpu_s=cpu, model_s=0.01, calls=n / rows, wall_s=0.0 if closed else cpu / busy)

    light, heavy, full = phase(1.05, 0.12), phase(1.4, 0.7), phase(50.0, 1.0, closed=True)
    assert _fit((light, heavy, full)) == pytest.approx((r, c, w), rel=1e-6)
    noisy = phase(1.4, 0.12)  # as busy as the light one, and batching more: no wake-up to tell apart
    per_request, per_batch, per_wake = _fit((light, replace(noisy, cpu_s=noisy.cpu_s * 3), full))
    assert per_wake == 0 and per_request > 0 and per_batch > 0
