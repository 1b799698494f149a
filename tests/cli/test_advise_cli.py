"""`augury advise` from the command line: JSON with a mode, a report, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_cli import assert_clean_error, augury


@pytest.mark.slow
def test_advise_json_and_report(hgb_model: Path, features_parquet: Path, tmp_path: Path) -> None:
    proc = augury("advise", str(hgb_model), str(features_parquet), "--key", "id", "--qps", "200",
                  "--latency-slo-ms", "50", "--max-staleness", "1h", "--budget", "3",
                  "--report", str(tmp_path / "report"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["mode"] in ("static", "dynamic", "hybrid")
    assert doc["settings"] and doc["reasons"]
    html = Path(doc["report"]).read_text()
    assert "<img" in html and "http://" not in html


def test_advise_bad_input(hgb_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    # each error names the input or the flag it is about (issue 15 review: "the input has no rows",
    # "core_cost must be a positive number")
    assert_clean_error(augury("advise", str(hgb_model), str(empty)), 2,
                       f"the sample DATA: input file {empty} is empty")
    assert_clean_error(augury("advise", str(hgb_model), str(empty), "--qps", "-5"), 2,
                       "--qps must be a positive number, not -5")
    assert_clean_error(augury("advise", str(hgb_model), str(empty), "--core-cost", "0"), 2,
                       "--core-cost must be a positive number, not 0")
    assert_clean_error(augury("advise", str(hgb_model), str(empty), "--store-cost", "-1"), 2,
                       "--store-cost must be 0 or more, not -1")


@pytest.mark.slow
def test_calibrate_then_advise_with_it(hgb_model: Path, features_parquet: Path, tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    # short phases (0.6 s, the default is 2.5): what is checked here is the file and its use, not the
    # figures (tests/advise/test_calibrate.py checks those, with the same phase length)
    proc = augury("advise", "--calibrate", "--calibrate-phase", "0.6", "--calibration", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["calibrated"] is True and path.exists()
    proc = augury("advise", str(hgb_model), str(features_parquet), "--key", "id", "--qps", "50",
                  "--budget", "2", "--json", env={"AUGURY_CALIBRATION": str(path)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["serving_overheads"]["path"] == str(path)
    assert set(doc["modes"]) == {"static", "dynamic", "hybrid"}


def test_advise_without_model_or_with_a_bad_calibration(tmp_path: Path) -> None:
    assert_clean_error(augury("advise"), 2, "needs MODEL and DATA")
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert_clean_error(augury("advise", "m.joblib", "d.parquet", "--calibration", str(bad)), 2,
                       "not an augury calibration file")
