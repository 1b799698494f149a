"""`batch.local_output.LocalOutput`: a run's staging folder on a local file system, its resume, its errors
file and its commit by rename, on real files (the runs through `run_batch` are in test_runner.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch.dataset import MANIFEST, read_manifest
from augury.batch.local_output import LocalOutput, staging_dir
from augury.batch.sources import Plan
from augury.batch.worker import ERROR_SCHEMA, errors_path, part_path
from augury.errors import BatchError

FINGERPRINT = {"input": [{"path": "/data/in.parquet", "size": 10}], "model_version": "1"}
PLAN = Plan(task_rows=100, task_bytes=1 << 20)


def part(staging: Path, task_id: str, ids: list[int], id_type: pa.DataType | None = None) -> None:
    table = pa.table({"id": pa.array(ids, id_type or pa.int64()), "value": np.arange(len(ids), dtype=float)})
    pq.write_table(table, part_path(staging, task_id))


def errors(staging: Path, task_id: str, rows: list[int]) -> None:
    table = pa.Table.from_pylist(
        [{"row": r, "file": "in.csv", "key": None, "reason": f"bad {r}"} for r in rows], schema=ERROR_SCHEMA)
    pq.write_table(table, errors_path(staging, task_id))


def started(out: Path, to_dataset: bool = False) -> LocalOutput:
    output = LocalOutput(out, to_dataset)
    assert output.prepare(FINGERPRINT, PLAN, False, []) == (set(), PLAN)
    return output


def test_a_new_run_records_its_fingerprint_and_plan(tmp_path: Path) -> None:
    output = started(tmp_path / "p.parquet")
    assert output.staging == staging_dir(tmp_path / "p.parquet") == tmp_path / ".p.parquet.augury-run"
    assert orjson.loads((output.staging / "run.json").read_bytes()) == {**FINGERPRINT, "plan": PLAN.to_dict()}
    assert [p.name for p in output.staging.iterdir()] == ["run.json"]


def test_a_resumed_run_keeps_its_finished_tasks_and_its_own_plan(tmp_path: Path) -> None:
    staging = started(tmp_path / "p.parquet").staging
    part(staging, "00000-000000", [1, 2])
    part(staging, "00000-000001", [3])
    (staging / ".part-00000-000002.parquet.tmp").write_bytes(b"half")  # an attempt killed mid-write
    notes: list[str] = []
    done, plan = LocalOutput(tmp_path / "p.parquet", False).prepare(FINGERPRINT, Plan(7, 8), True, notes)
    assert done == {"00000-000000", "00000-000001"} and plan == PLAN and notes == []
    assert not list(staging.glob(".*.tmp"))


def test_a_new_run_discards_an_interrupted_one_and_says_so(tmp_path: Path) -> None:
    staging = started(tmp_path / "p.parquet").staging
    part(staging, "00000-000000", [1])
    notes: list[str] = []
    again = LocalOutput(tmp_path / "p.parquet", False)
    assert again.prepare(FINGERPRINT, PLAN, False, notes) == (set(), PLAN)
    assert notes == ["discarded an interrupted run's 1 finished task(s); pass --resume to continue one"]
    assert [p.name for p in staging.iterdir()] == ["run.json"]
    notes.clear()
    assert LocalOutput(tmp_path / "q.parquet", False).prepare(FINGERPRINT, PLAN, True, notes) == (set(), PLAN)
    assert notes == ["nothing to resume: starting a new run"]


@pytest.mark.parametrize("run_json,message", [
    (None, r"cannot resume: \S+ has no run\.json; rerun without --resume"),
    (orjson.dumps({**FINGERPRINT, "model_version": "2", "plan": PLAN.to_dict()}),
     "cannot resume: the model_version changed since the interrupted run; rerun without --resume"),
    (b'{"input": [', r"cannot resume: cannot read \S+run\.json: .*; rerun without --resume to start over"),
    (b"[1, 2]", r"cannot resume: cannot read \S+run\.json: .*; rerun without --resume to start over"),
    (orjson.dumps({**FINGERPRINT, "plan": [1]}), r"cannot resume: cannot read \S+: the plan is list"),
])
def test_a_run_that_cannot_be_resumed_is_one_batch_error_and_keeps_its_tasks(
        tmp_path: Path, run_json: bytes | None, message: str) -> None:
    staging = started(tmp_path / "p.parquet").staging
    part(staging, "00000-000000", [1])
    if run_json is None:
        (staging / "run.json").unlink()
    else:
        (staging / "run.json").write_bytes(run_json)
    with pytest.raises(BatchError, match=message):
        LocalOutput(tmp_path / "p.parquet", False).prepare(FINGERPRINT, PLAN, True, [])
    assert part_path(staging, "00000-000000").exists()


def test_rows_and_errors_counted_from_the_footers_and_renumbered_from_the_first_row(tmp_path: Path) -> None:
    output = started(tmp_path / "p.parquet")
    staging = output.staging
    part(staging, "00000-000000", [0, 2, 3])
    errors(staging, "00000-000000", [1, -1])  # row 1 rejected; -1: a line that could not be read at all
    part(staging, "00000-000001", [5])
    errors(staging, "00000-000001", [0])  # its first row: row 3 + 1 rejected before it = input row 4
    (staging / ".errors-00000-000001.parquet.tmp").write_bytes(b"half")
    assert output.task_rows("00000-000000") == (3, 2) and output.task_rows("00000-000001") == (1, 1)
    errors_file = tmp_path / "p.errors.jsonl"
    assert output.collect_errors(["00000-000000", "00000-000001"], str(errors_file)) == 3
    lines = [orjson.loads(line) for line in errors_file.read_bytes().splitlines()]
    assert [(x["row"], x["reason"]) for x in lines] == [(1, "bad 1"), (-1, "bad -1"), (4, "bad 0")]
    assert not list(staging.glob(".*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_no_failed_row_writes_no_errors_file_and_removes_an_earlier_one(tmp_path: Path) -> None:
    output = started(tmp_path / "p.parquet")
    part(output.staging, "00000-000000", [1])
    errors_file = tmp_path / "p.errors.jsonl"
    errors_file.write_text('{"row": 9}\n')  # an earlier run's
    assert output.collect_errors(["00000-000000"], str(errors_file)) == 0
    assert not errors_file.exists()


def test_a_file_is_the_parts_in_task_order_cast_to_the_first_ones_schema(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    out.write_bytes(b"the previous output")
    output = started(out)
    part(output.staging, "00000-000001", [3, 4], pa.int32())  # (a second input file's key type)
    part(output.staging, "00000-000000", [1, 2])
    pq.write_table(pa.table({}), part_path(output.staging, "00000-000002"))  # a task without rows
    assert output.commit(["00000-000000", "00000-000001", "00000-000002"], FINGERPRINT) == 4
    table = pq.read_table(out)
    assert table.column("id").to_pylist() == [1, 2, 3, 4] and table.schema.field("id").type == pa.int64()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]  # no staging, no temporary file


def test_nothing_scored_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "p.parquet"
    out.write_bytes(b"the previous output")
    output = started(out)
    pq.write_table(pa.table({}), part_path(output.staging, "00000-000000"))
    with pytest.raises(BatchError, match=r"^no row of the input could be scored$"):
        output.commit(["00000-000000"], FINGERPRINT)
    assert out.read_bytes() == b"the previous output" and not list(tmp_path.glob(".*tmp"))


def test_a_dataset_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    out = tmp_path / "preds"
    out.mkdir()
    (out / "part-old.parquet").write_bytes(b"the previous dataset's")
    output = started(out, to_dataset=True)
    part(output.staging, "00000-000001", [3])
    part(output.staging, "00000-000000", [1, 2])
    errors(output.staging, "00000-000000", [5])
    output.collect_errors(["00000-000000", "00000-000001"], str(tmp_path / "preds.errors.jsonl"))
    assert output.commit(["00000-000000", "00000-000001"], FINGERPRINT) == 3
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "part-00000-000000.parquet",
                                                      "part-00000-000001.parquet"]
    manifest = read_manifest(out)
    assert [p.name for p in manifest.parts] == ["part-00000-000000.parquet", "part-00000-000001.parquet"]
    assert manifest.fingerprint == FINGERPRINT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds", "preds.errors.jsonl"]  # nothing aside
