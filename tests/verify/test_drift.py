"""Drift against a baseline profile: PSI by hand, same distribution passes, a shift fails."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from augury.store.base import VersionInfo
from augury.verify import Baseline, Checks, DriftCheck, profile_predictions, verify

from .helpers import classifier_file, regressor_info, write_predictions


def regressor(path: Path, values: np.ndarray) -> Path:
    return write_predictions(path, {"id": np.arange(len(values)), "value": values}, regressor_info())


def test_psi_of_a_numeric_column_matches_a_hand_computation(tmp_path: Path) -> None:
    baseline = profile_predictions(regressor(tmp_path / "old.parquet", np.arange(100, dtype=np.float64)))
    # baseline bins (-inf, 9), [9, 19), ..., [89, inf) hold 9, 10 x 8, 11 of the 100 values
    new = np.concatenate([np.full(50, 1.0), np.full(50, 95.0)])  # half in the first bin, half in the last
    gate = verify(regressor(tmp_path / "new.parquet", new), baseline=Baseline(100, baseline)).gate("drift")
    eps = 1e-4
    by_hand = ((0.5 - 0.09) * math.log(0.5 / 0.09) + (0.5 - 0.11) * math.log(0.5 / 0.11)
               + 8 * (eps - 0.1) * math.log(eps / 0.1))
    assert math.isclose(gate.observed, by_hand, rel_tol=1e-12)
    assert gate.status == "failed"
    assert gate.message == f"drift: PSI of value is {by_hand:.2f} > 0.2"


def test_the_same_distribution_passes(tmp_path: Path) -> None:
    old = profile_predictions(classifier_file(tmp_path / "old.parquet", n=20_000, seed=1))
    new = classifier_file(tmp_path / "new.parquet", n=20_000, seed=2)
    report = verify(new, baseline=Baseline(20_000, old))
    gate = report.gate("drift")
    assert gate.status == "passed", gate.message
    assert gate.observed < 0.01
    assert set(gate.details["psi"]) == {"label", "proba_no", "proba_yes"}


def test_a_shifted_distribution_fails(tmp_path: Path) -> None:
    old = profile_predictions(classifier_file(tmp_path / "old.parquet", n=20_000, seed=1))
    report = verify(classifier_file(tmp_path / "new.parquet", n=20_000, seed=2, shift=0.25),
                    baseline=Baseline(20_000, old))
    gate = report.gate("drift")
    assert gate.status == "failed"
    worst = max(gate.details["psi"].values())
    assert gate.observed == worst > 0.2
    assert gate.message.startswith("drift: PSI of ")
    assert f"is {worst:.2f} > 0.2" in gate.message
    assert "also over:" in gate.message
    assert not report.passed


def test_label_shares_drift(tmp_path: Path) -> None:
    old = profile_predictions(classifier_file(tmp_path / "old.parquet", n=5000, seed=1))
    path = classifier_file(tmp_path / "new.parquet", n=5000, seed=1, shift=0.3)
    assert verify(path, baseline=Baseline(5000, old)).gate("drift").details["psi"]["label"] > 0.2


def test_the_threshold_is_configurable(tmp_path: Path) -> None:
    old = profile_predictions(classifier_file(tmp_path / "old.parquet", n=5000, seed=1))
    path = classifier_file(tmp_path / "new.parquet", n=5000, seed=2, shift=0.25)
    loose = verify(path, Checks(drift=DriftCheck(psi_max=100.0)), Baseline(5000, old)).gate("drift")
    assert loose.status == "passed"
    off = verify(path, Checks(drift=DriftCheck(enabled=False)), Baseline(5000, old)).gate("drift")
    assert off.status == "skipped"


def test_baseline_from_a_published_version(tmp_path: Path) -> None:
    old = profile_predictions(classifier_file(tmp_path / "old.parquet", n=5000, seed=1))
    stored = json.loads(json.dumps(old.to_dict()))  # as a store would keep it
    info = VersionInfo("s1", "v1", 0.0, 5000, ("label",), "ready", True, profile=stored)
    report = verify(classifier_file(tmp_path / "new.parquet", n=5000, seed=1), baseline=info)
    assert report.gate("drift").status == "passed" and report.gate("drift").observed == 0.0
    assert report.gate("row_change").status == "passed"


def test_a_version_without_a_profile_skips_drift(tmp_path: Path) -> None:
    info = VersionInfo("s1", "v1", 0.0, 1000, ("label",), "ready", True)
    report = verify(classifier_file(tmp_path / "new.parquet"), baseline=info)
    assert report.gate("drift").message == "drift: skipped, the baseline version has no stored profile"
    assert report.gate("row_change").status == "passed"


def test_columns_the_baseline_lacks_are_listed_not_compared(tmp_path: Path) -> None:
    old = profile_predictions(classifier_file(tmp_path / "old.parquet", n=1000), outputs=["label"])
    new = classifier_file(tmp_path / "new.parquet", n=1000)
    gate = verify(new, baseline=Baseline(1000, old)).gate("drift")
    assert set(gate.details["psi"]) == {"label"}
    assert gate.details["not_compared"] == {"proba_no": "not in the baseline profile",
                                            "proba_yes": "not in the baseline profile"}


def test_an_unreadable_stored_profile_skips_drift_and_says_why(tmp_path: Path) -> None:
    info = VersionInfo("s1", "v1", 0.0, 1000, ("label",), "ready", True, profile={"format": 99})
    gate = verify(classifier_file(tmp_path / "new.parquet"), baseline=info).gate("drift")
    assert gate.status == "skipped"
    assert gate.message == ("drift: skipped, the baseline version has an unreadable stored profile "
                            "(unsupported profile format 99 (expected 1))")
