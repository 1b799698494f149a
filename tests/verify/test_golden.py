"""The golden set, matched by key column and by canonical feature hash, from Parquet, CSV and JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.errors import ConfigError
from augury.keys import feature_keys
from augury.schema import conform
from augury.verify import Checks, GoldenCheck, load_checks, verify

from .helpers import classifier_info, write_predictions, write_toml

LABELS = ["no", "yes", "yes", "no"]
YES = [0.1, 0.8, 0.6, 0.3]


def keyed(path: Path) -> Path:
    return write_predictions(path, {"id": [10, 11, 12, 13], "label": LABELS,
                                    "proba_no": [1 - p for p in YES], "proba_yes": YES}, classifier_info())


def golden(tmp_path: Path, rows: list[dict[str, object]], name: str = "golden.parquet",
           min_agreement: float = 1.0) -> Checks:
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        cols = list(rows[0])
        lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    return Checks(golden=GoldenCheck(path, min_agreement=min_agreement))


def test_by_key_all_agree(tmp_path: Path) -> None:
    checks = golden(tmp_path, [{"id": 10, "label": "no", "proba_yes": 0.1}, {"id": 12, "label": "yes"}])
    gate = verify(keyed(tmp_path / "p.parquet"), checks).gate("golden")
    assert gate.status == "passed" and gate.observed == 1.0
    assert gate.message == "golden: 2/2 golden rows agree"


def test_a_wrong_label_and_an_absent_row_disagree(tmp_path: Path) -> None:
    checks = golden(tmp_path, [{"id": i, "label": "no"} for i in (10, 11, 99)])
    gate = verify(keyed(tmp_path / "p.parquet"), checks).gate("golden")
    assert gate.status == "failed"
    assert gate.message == ("golden: agreement is 0.3333 (1/3) < 1; "
                            "row 2 (11): label: expected 'no', got 'yes'; "
                            "row 3 (99): absent from the predictions")
    assert gate.details["missing"] == 1
    assert gate.details["first_disagreements"][1] == {"golden_row": 3, "key": "99",
                                                      "reason": "absent from the predictions"}


def test_min_agreement(tmp_path: Path) -> None:
    checks = golden(tmp_path, [{"id": 10, "label": "no"}, {"id": 11, "label": "no"}], min_agreement=0.5)
    assert verify(keyed(tmp_path / "p.parquet"), checks).gate("golden").status == "passed"


def test_floats_within_rtol(tmp_path: Path) -> None:
    close = golden(tmp_path, [{"id": 11, "proba_yes": 0.8 * (1 + 1e-7)}])
    assert verify(keyed(tmp_path / "p.parquet"), close).gate("golden").status == "passed"
    far = golden(tmp_path, [{"id": 11, "proba_yes": 0.8 * (1 + 1e-5)}])
    gate = verify(keyed(tmp_path / "p.parquet"), far).gate("golden")
    assert gate.status == "failed" and "proba_yes: expected 0.800008, got 0.8" in gate.message


def test_a_null_expected_value_is_not_checked(tmp_path: Path) -> None:
    checks = golden(tmp_path, [{"id": 10, "label": None, "proba_yes": 0.1}, {"id": 11, "label": "yes",
                                                                           "proba_yes": None}])
    assert verify(keyed(tmp_path / "p.parquet"), checks).gate("golden").status == "passed"


def test_csv_and_jsonl_golden_files(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"id": 10, "label": "no", "proba_yes": 0.1}, {"id": 13, "label": "no"}]
    for name in ("golden.csv", "golden.jsonl"):
        shaped = rows if name.endswith("jsonl") else [{"id": 10, "label": "no"}, {"id": 13, "label": "no"}]
        gate = verify(keyed(tmp_path / "p.parquet"), golden(tmp_path, shaped, name)).gate("golden")
        assert gate.status == "passed", (name, gate.message)


def test_a_csv_text_key_keeps_its_leading_zeros(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", {"sku": ["007", "7"], "label": ["yes", "no"],
                                                      "proba_no": [0.2, 0.9], "proba_yes": [0.8, 0.1]},
                             classifier_info(), key_columns=["sku"])
    (tmp_path / "g.csv").write_text("sku,label\n007,yes\n7,no\n")
    assert verify(path, Checks(golden=GoldenCheck(tmp_path / "g.csv"))).gate("golden").status == "passed"


def test_by_feature_hash(tmp_path: Path) -> None:
    info = classifier_info()
    features = pa.table({"x": [0.5, 1.5, -2.0, 3.0], "y": [1.0, 2.0, 3.0, 4.0]})
    keys = feature_keys(conform(features, info.inputs).batch, info.inputs)
    path = write_predictions(tmp_path / "p.parquet", {"key": keys, "label": LABELS,
                                                      "proba_no": [1 - p for p in YES], "proba_yes": YES},
                             info, key_columns=["key"], key_kind="hash")
    # ints where the schema says float: conform casts them before hashing, as the batch runner does
    checks = golden(tmp_path, [{"x": 0.5, "y": 1, "label": "no"}, {"x": -2, "y": 3, "label": "yes",
                                                                  "proba_yes": 0.6}])
    gate = verify(path, checks).gate("golden")
    assert gate.status == "passed", gate.message
    unseen = golden(tmp_path, [{"x": 9.0, "y": 9.0, "label": "no"}, {"x": 1.5, "y": 2.0, "label": "yes"}])
    gate = verify(path, unseen).gate("golden")
    assert gate.observed == 0.5 and "absent from the predictions" in gate.message


def test_golden_columns_that_are_not_outputs(tmp_path: Path) -> None:
    gate = verify(keyed(tmp_path / "p.parquet"), golden(tmp_path, [{"id": 10, "lable": "no"}])).gate("golden")
    assert gate.status == "failed"
    assert gate.message == "golden: golden column(s) lable are not output columns"


def test_golden_without_key_columns(tmp_path: Path) -> None:
    gate = verify(keyed(tmp_path / "p.parquet"), golden(tmp_path, [{"x": 1.0, "label": "no"}])).gate("golden")
    assert gate.message == "golden: the golden file needs key column(s) id; it has x, label"


def test_duplicate_golden_keys(tmp_path: Path) -> None:
    checks = golden(tmp_path, [{"id": 10, "label": "no"}, {"id": 10, "label": "yes"}])
    gate = verify(keyed(tmp_path / "p.parquet"), checks).gate("golden")
    assert gate.message == "golden: golden rows 1 and 2 have the same key 10"


def test_golden_needs_metadata_to_find_keys(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", {"id": [1], "label": ["no"], "proba_no": [0.9],
                                                      "proba_yes": [0.1]}, None)
    gate = verify(path, golden(tmp_path, [{"id": 1, "label": "no"}])).gate("golden")
    assert gate.status == "failed" and "no augury metadata" in gate.message


def test_golden_path_from_toml_is_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": 13, "label": "no"}]), tmp_path / "conf" / "g.parquet")
    checks = load_checks(write_toml(tmp_path / "conf" / "checks.toml", "[golden]\npath = 'g.parquet'\n"))
    assert verify(keyed(tmp_path / "p.parquet"), checks).gate("golden").status == "passed"


def test_an_unreadable_golden_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "g.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="cannot be read"):
        verify(keyed(tmp_path / "p.parquet"), Checks(golden=GoldenCheck(tmp_path / "g.parquet")))
    (tmp_path / "g.xlsx").write_text("")
    with pytest.raises(ConfigError, match="unknown format"):
        verify(keyed(tmp_path / "p.parquet"), Checks(golden=GoldenCheck(tmp_path / "g.xlsx")))


def test_by_several_key_columns(tmp_path: Path) -> None:
    columns = {"shop": ["a", "a", "b"], "day": [1, 2, 1], "label": ["no", "yes", "yes"],
               "proba_no": [0.9, 0.2, 0.4], "proba_yes": [0.1, 0.8, 0.6]}
    path = write_predictions(tmp_path / "p.parquet", columns, classifier_info(), key_columns=["shop", "day"])
    rows: list[dict[str, object]] = [{"shop": "a", "day": 2, "label": "yes"},
                                     {"shop": "b", "day": 2, "label": "no"}]
    checks = golden(tmp_path, rows, min_agreement=0.5)
    gate = verify(path, checks).gate("golden")
    assert gate.status == "passed" and gate.observed == 0.5
    assert gate.details["first_disagreements"] == [{"golden_row": 2, "key": '["b",2]',
                                                    "reason": "absent from the predictions"}]


def test_golden_features_the_model_cannot_score(tmp_path: Path) -> None:
    info = classifier_info()
    path = write_predictions(tmp_path / "p.parquet", {"key": ["0" * 32], "label": ["no"], "proba_no": [0.9],
                                                      "proba_yes": [0.1]}, info, key_columns=["key"],
                             key_kind="hash")
    gate = verify(path, golden(tmp_path, [{"x": None, "y": 1.0, "label": "no"}])).gate("golden")
    assert gate.message == "golden: 1 golden row(s) cannot be scored: golden row 1: feature 'x' is missing"
