"""Each gate passing and failing on real predictions files, with the failure message checked."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa

from augury.verify import Baseline, Checks, load_checks, verify
from augury.verify.config import ClassSharesCheck, FiniteCheck, ProbabilitiesCheck, Range, RowsCheck

from .helpers import (
    classifier_file,
    classifier_info,
    regressor_info,
    write_predictions,
    write_toml,
)


def classifier(path: Path, label: list[str], yes: list[float], no: list[float] | None = None,
               model_version: str | None = None) -> Path:
    no = no if no is not None else [1.0 - p for p in yes]
    columns = {"id": list(range(len(label))), "label": label, "proba_no": pa.array(no, type=pa.float64()),
               "proba_yes": pa.array(yes, type=pa.float64())}
    return write_predictions(path, columns, classifier_info(), model_version=model_version)


def regressor(path: Path, values: list[float | None]) -> Path:
    return write_predictions(path, {"id": list(range(len(values))), "value": pa.array(values, pa.float64())},
                             regressor_info())


def test_a_healthy_classifier_passes_every_default_gate(tmp_path: Path) -> None:
    report = verify(classifier_file(tmp_path / "p.parquet"), Checks())
    assert report.passed, report.summary()
    status = {g.name: g.status for g in report.gates}
    assert status == {"columns": "passed", "provenance": "passed", "keys": "passed", "rows": "passed",
                      "row_change": "skipped",
                      "finite": "passed", "ranges": "passed", "probabilities": "passed",
                      "class_shares": "passed", "drift": "skipped", "golden": "skipped"}
    assert report.gate("drift").message == ("drift: skipped, no baseline "
                                            "(no active published version to compare with)")


def test_verify_uses_the_defaults_when_given_no_checks(tmp_path: Path) -> None:
    assert verify(classifier_file(tmp_path / "p.parquet")).passed


def test_rows_min_and_max(tmp_path: Path) -> None:
    path = classifier_file(tmp_path / "p.parquet", n=50)
    low = verify(path, Checks(rows=RowsCheck(min=100))).gate("rows")
    assert low.status == "failed" and low.message == "rows: 50 rows < min 100"
    high = verify(path, Checks(rows=RowsCheck(max=10))).gate("rows")
    assert high.status == "failed" and high.message == "rows: 50 rows > max 10"
    assert verify(path, Checks(rows=RowsCheck(min=50, max=50))).gate("rows").status == "passed"


def test_row_change_against_the_baseline(tmp_path: Path) -> None:
    path = classifier_file(tmp_path / "p.parquet", n=1500)
    ok = verify(path, baseline=Baseline(1000)).gate("row_change")
    assert ok.status == "passed" and ok.observed == 0.5
    bad = verify(path, Checks(rows=RowsCheck(max_change=0.1)), Baseline(1000)).gate("row_change")
    assert bad.status == "failed"
    assert bad.message == "row_change: 1500 rows is +50.0% vs the baseline's 1000 (limit ±10.0%)"
    fewer = verify(path, baseline=Baseline(4000)).gate("row_change")
    assert fewer.status == "failed" and "-62.5%" in fewer.message


def test_nan_inf_and_null_fail_the_finite_gate(tmp_path: Path) -> None:
    gate = verify(regressor(tmp_path / "p.parquet", [1.0, math.nan, math.inf, None, 2.0])).gate("finite")
    assert gate.status == "failed"
    assert gate.message == "finite: value has 1 NaN, 1 +inf, 1 null (allowed: 0)"
    assert gate.observed == 3
    off = verify(tmp_path / "p.parquet", Checks(finite=FiniteCheck(enabled=False))).gate("finite")
    assert off.status == "skipped"


def test_a_null_label_fails_the_finite_gate(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", {"id": [1, 2], "label": ["no", None],
                                                      "proba_no": [0.9, 0.4], "proba_yes": [0.1, 0.6]},
                             classifier_info())
    assert verify(path).gate("finite").message == "finite: label has 1 null (allowed: 0)"


def test_probabilities_default_to_zero_one(tmp_path: Path) -> None:
    gate = verify(classifier(tmp_path / "p.parquet", ["yes", "no"], [1.25, 0.5], [-0.25, 0.5])).gate("ranges")
    assert gate.status == "failed"
    assert "proba_no has 1 value(s) outside [0, 1] (min -0.25, max 0.5)" in gate.message
    assert "proba_yes has 1 value(s) outside [0, 1] (min 0.5, max 1.25)" in gate.message
    assert gate.details["proba_yes"]["above"] == 1


def test_configured_ranges(tmp_path: Path) -> None:
    path = regressor(tmp_path / "p.parquet", [1.0, 5.0, 12.0])
    ok = verify(path, Checks(ranges={"value": Range(0, 20)})).gate("ranges")
    assert ok.status == "passed"
    bad = verify(path, Checks(ranges={"value": Range(0, 10)})).gate("ranges")
    assert bad.message == "ranges: value has 1 value(s) outside [0, 10] (min 1, max 12)"
    typo = verify(path, Checks(ranges={"valeu": Range(0, 10)})).gate("ranges")
    assert typo.status == "failed" and "valeu is not a numeric output column" in typo.message
    assert verify(path).gate("ranges").status == "skipped"


def test_probabilities_must_sum_to_one(tmp_path: Path) -> None:
    path = classifier(tmp_path / "p.parquet", ["no", "yes", "yes"], [0.2, 0.7, 0.6], [0.8, 0.3, 0.3])
    gate = verify(path).gate("probabilities")
    assert gate.status == "failed"
    assert gate.message.startswith("probabilities: 1 row(s) whose probabilities do not sum to 1 ± 1e-06")
    assert gate.observed == 0.1 or math.isclose(gate.observed, 0.1)
    assert "> 1e-06" in gate.message
    loose = verify(path, Checks(probabilities=ProbabilitiesCheck(sum_tolerance=0.2))).gate("probabilities")
    assert loose.status == "passed"
    off = verify(path, Checks(probabilities=ProbabilitiesCheck(enabled=False)))
    assert off.gate("probabilities").status == "skipped" and off.gate("ranges").status == "skipped"


def test_probabilities_within_float_noise_pass(tmp_path: Path) -> None:
    yes = np.random.default_rng(3).random(1000)
    path = classifier(tmp_path / "p.parquet", ["yes" if p > 0.5 else "no" for p in yes], list(yes),
                      list((1.0 - yes).astype(np.float32).astype(np.float64)))
    assert verify(path).gate("probabilities").status == "passed"


def test_the_probability_gate_is_skipped_for_a_regressor(tmp_path: Path) -> None:
    gate = verify(regressor(tmp_path / "p.parquet", [1.0])).gate("probabilities")
    assert gate.status == "skipped" and "not a classifier" in gate.message


def test_class_share_bounds(tmp_path: Path) -> None:
    labels = ["no"] * 995 + ["yes"] * 5
    path = classifier(tmp_path / "p.parquet", labels, [0.1 if lab == "no" else 0.9 for lab in labels])
    assert verify(path).gate("class_shares").status == "passed"
    low = verify(path, Checks(class_shares=ClassSharesCheck(min=0.01))).gate("class_shares")
    assert low.status == "failed"
    assert low.message == "class_shares: share of class 'yes' is 0.005 < min 0.01"
    assert low.observed == {"no": 0.995, "yes": 0.005}
    per_label = ClassSharesCheck(labels={"no": Range(0.0, 0.9)})
    high = verify(path, Checks(class_shares=per_label)).gate("class_shares")
    assert high.message == "class_shares: share of class 'no' is 0.995 > max 0.9"


def test_class_share_bounds_from_toml(tmp_path: Path) -> None:
    labels = ["no"] * 70 + ["yes"] * 30
    path = classifier(tmp_path / "p.parquet", labels, [0.1 if lab == "no" else 0.9 for lab in labels])
    toml = "[class_shares]\nmin = 0.05\n[class_shares.yes]\nmax = 0.2"
    checks = load_checks(write_toml(tmp_path / "c.toml", toml))
    gate = verify(path, checks).gate("class_shares")
    assert gate.message == "class_shares: share of class 'yes' is 0.3 > max 0.2"


def test_a_declared_class_never_predicted_fails_a_min_share(tmp_path: Path) -> None:
    path = classifier(tmp_path / "p.parquet", ["no", "no", "no"], [0.1, 0.2, 0.3])
    gate = verify(path, Checks(class_shares=ClassSharesCheck(min=0.1))).gate("class_shares")
    assert gate.message == "class_shares: share of class 'yes' is 0 < min 0.1"


def test_collapse_to_one_class(tmp_path: Path) -> None:
    path = classifier(tmp_path / "p.parquet", ["no"] * 100, [0.1] * 100)
    gate = verify(path).gate("class_shares")
    assert gate.status == "failed"
    assert gate.message == ("class_shares: all 100 rows are labelled 'no' "
                            "(collapse: a single class over >= 100 rows)")
    small = classifier(tmp_path / "small.parquet", ["no"] * 99, [0.1] * 99)
    assert verify(small).gate("class_shares").status == "passed"
    off = verify(path, Checks(class_shares=ClassSharesCheck(collapse_min_rows=0)))
    assert off.gate("class_shares").status == "passed"


def test_a_label_that_is_not_a_class(tmp_path: Path) -> None:
    gate = verify(classifier(tmp_path / "p.parquet", ["no", "maybe"], [0.1, 0.5])).gate("class_shares")
    assert gate.message == "class_shares: label(s) 'maybe' are not classes of the model ['no', 'yes']"


def test_provenance_must_match_the_model_version(tmp_path: Path) -> None:
    path = classifier(tmp_path / "p.parquet", ["no"], [0.1], model_version="v0")
    gate = verify(path).gate("provenance")
    assert gate.status == "failed"
    assert gate.message == "provenance: model_version values ['v0'] (expected only 'v1')"


def test_a_declared_column_that_is_missing(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", {"id": [1], "label": ["no"], "proba_no": [0.9]},
                             classifier_info())
    report = verify(path)
    assert report.gate("columns").message == "columns: missing column(s) proba_yes"
    assert not report.passed
