"""Reading predictions files: clear errors for bad files, files without metadata, empty and large files."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.errors import InputError
from augury.verify import Checks, GoldenCheck, NumericProfile, profile_predictions, verify
from augury.verify.source import BATCH_ROWS, PredictionsFile

from .helpers import classifier_columns, classifier_info, write_predictions


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="predictions file not found"):
        verify(tmp_path / "absent.parquet")


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        verify(tmp_path)


@pytest.mark.parametrize("content", [b"", b"id,label\n1,yes\n"])
def test_not_a_parquet_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "p.parquet").write_bytes(content)
    with pytest.raises(InputError, match="is not a readable Parquet file"):
        verify(tmp_path / "p.parquet")


def test_corrupt_metadata(tmp_path: Path) -> None:
    table = pa.table({"id": [1], "value": [1.0]}).replace_schema_metadata({b"augury": b"{not json"})
    pq.write_table(table, tmp_path / "p.parquet")
    with pytest.raises(InputError, match="augury metadata is not valid JSON"):
        verify(tmp_path / "p.parquet")


def test_zero_rows_fail_the_rows_gate_without_crashing(tmp_path: Path) -> None:
    columns = {"id": pa.array([], pa.int64()), "label": pa.array([], pa.string()),
               "proba_no": pa.array([], pa.float64()), "proba_yes": pa.array([], pa.float64())}
    report = verify(write_predictions(tmp_path / "p.parquet", columns, classifier_info()))
    assert not report.passed
    assert report.gate("rows").message == "rows: 0 rows < min 1"
    assert [g.name for g in report.failures] == ["rows"]
    assert report.profile.row_count == 0


def test_without_metadata_what_can_be_verified_is(tmp_path: Path) -> None:
    columns = {"key": ["a" * 32, "b" * 32], "label": ["no", "yes"], "proba_no": [0.7, math.nan],
               "proba_yes": [0.3, 0.6]}
    report = verify(write_predictions(tmp_path / "p.parquet", columns, None))
    assert report.model is None
    assert report.notes == ("no augury metadata: not written by `augury batch`; output columns inferred as "
                            "label, proba_no, proba_yes, task guessed as 'classification'",)
    assert report.gate("finite").message == "finite: proba_no has 1 NaN (allowed: 0)"
    assert report.gate("ranges").status == "passed"  # proba_* default to [0, 1] for a guessed classifier
    assert report.gate("provenance").status == "passed"
    assert report.to_dict()["notes"] == list(report.notes)


def test_a_plain_parquet_file_with_user_key_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"customer": [1, 2], "score": [0.1, 0.2]}), tmp_path / "p.parquet")
    report = verify(tmp_path / "p.parquet")
    assert report.passed
    assert set(report.profile.columns) == {"customer", "score"}  # without metadata, keys look like outputs
    assert report.gate("provenance").status == "skipped"


def test_a_multi_row_group_file_is_streamed(tmp_path: Path) -> None:
    n = 2 * BATCH_ROWS + 1000
    cols = classifier_columns(n, seed=4)
    cols["proba_yes"][-1] = math.nan  # in the last row group
    cols["proba_no"][n // 2] = 1.5  # in the middle
    path = write_predictions(tmp_path / "p.parquet", {"id": np.arange(n), **cols}, classifier_info(),
                             row_group_size=10_000)
    assert pq.ParquetFile(path).metadata.num_row_groups > 10
    with PredictionsFile(path) as f:
        sizes = [b.num_rows for b in f.batches(["label"])]
    assert len(sizes) >= 3 and max(sizes) <= BATCH_ROWS and sum(sizes) == n
    pq.write_table(pa.table({"id": [n - 1], "label": [str(cols["label"][-1])]}), tmp_path / "g.parquet")
    report = verify(path, Checks(golden=GoldenCheck(tmp_path / "g.parquet")))
    assert report.profile.row_count == n
    assert report.gate("finite").message == "finite: proba_yes has 1 NaN (allowed: 0)"
    assert report.gate("ranges").details["proba_no"]["above"] == 1
    assert report.gate("golden").status == "passed"
    in_memory = profile_predictions(pq.read_table(path))  # other batch boundaries, the same summary
    for name, col in report.profile.columns.items():
        other = in_memory.columns[name]
        if isinstance(col, NumericProfile) and isinstance(other, NumericProfile):
            assert col.mean == pytest.approx(other.mean, rel=1e-12)  # summed in another order
            other = dataclasses.replace(other, mean=col.mean)
        assert col == other


def test_the_metadata_is_read(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", {"id": [1], **classifier_columns(1)}, classifier_info())
    with PredictionsFile(path) as f:
        layout = f.layout
    assert layout.key_columns == ("id",) and layout.key_kind == "columns"
    assert layout.task == "classification" and layout.classes == ("no", "yes")
    assert [o.name for o in layout.proba] == ["proba_no", "proba_yes"]
    assert layout.label is not None and layout.inputs is not None and layout.inputs.names == ["x", "y"]
    assert json.loads(pq.read_schema(path).metadata[b"augury"])["model"]["version"] == "v1"
