"""The report: JSON form, rich rendering, and raising on failure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from augury.errors import VerificationFailed
from augury.verify import Baseline, profile_predictions, render_report, verify

from .helpers import classifier_file, regressor_info, write_predictions


def test_to_dict_is_json_serialisable(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", {"id": [1, 2, 3], "value": [1.0, math.inf, math.nan]},
                             regressor_info())
    report = verify(path, baseline=Baseline(3, profile_predictions(path)))
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["passed"] is False
    assert data["predictions"] == str(path)
    assert data["model"]["name"] == "price" and data["model"]["task"] == "regression"
    assert data["row_count"] == 3
    assert [g["name"] for g in data["gates"]] == [g.name for g in report.gates]
    rows = next(g for g in data["gates"] if g["name"] == "rows")
    assert rows == {"name": "rows", "status": "passed", "observed": 3, "threshold": [1, "inf"],
                    "message": "rows: 3 rows within [1, inf]", "details": {}}
    assert data["profile"] == report.profile.to_dict()


def test_rendering(tmp_path: Path) -> None:
    report = verify(classifier_file(tmp_path / "p.parquet", n=50), baseline=Baseline(10))
    console = Console(record=True, width=200)
    console.print(report)
    text = console.export_text()
    assert "verification FAILED" in text
    for gate in report.gates:
        assert gate.name in text
    assert "50 rows is +400.0% vs the baseline's 10 (limit ±50.0%)" in text
    assert "[label, proba_no, proba_yes]" in text  # lists are not taken for rich markup
    console.print(render_report(report))
    console.print(report.render())


def test_raise_if_failed(tmp_path: Path) -> None:
    ok = verify(classifier_file(tmp_path / "ok.parquet", n=50))
    ok.raise_if_failed()
    assert ok.summary() == f"verification passed: {tmp_path / 'ok.parquet'} (50 rows)"
    bad = verify(classifier_file(tmp_path / "bad.parquet", n=50), baseline=Baseline(10))
    with pytest.raises(VerificationFailed) as err:
        bad.raise_if_failed()
    assert err.value.report is bad
    assert "row_change: 50 rows is +400.0%" in str(err.value)
