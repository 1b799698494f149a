"""Tasks finer than row groups and files: row ranges inside a Parquet row group, byte ranges of CSV and
JSON Lines files. The same input and plan give the same tasks; every row is scored once whatever the cut,
with the same errors, and a resumed run cuts as the run it continues did."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch, staging_dir
from augury.batch.sources import Plan, line_cuts, open_source
from augury.errors import TooManyBadRows


@pytest.mark.parametrize("seed", range(8))
def test_line_cuts_start_tasks_at_line_starts_and_count_the_lines_before(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    lines = [b"x" * rng.choice([0, 1, 5, 40, 300]) for _ in range(rng.randint(1, 400))]
    data = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    task_bytes = rng.choice([1, 2, 7, 64, 1000])
    starts, before = line_cuts(path, task_bytes)
    assert starts == sorted(set(starts)) and starts[0] == 0 and starts[-1] < len(data)
    for start, count in zip(starts, before, strict=True):
        assert start == 0 or data[start - 1 : start] == b"\n"  # a task starts at a line's start
        assert count == data[:start].count(b"\n")
    # a task owns the lines starting in [multiple of task_bytes, next multiple): each line once
    ends = {data.index(b"\n", k - 1) + 1 for k in range(task_bytes, len(data), task_bytes)
            if b"\n" in data[k - 1 :]}
    expected = [0, *sorted(e for e in ends if e < len(data))]
    assert starts == expected
    assert line_cuts(path, task_bytes) == (starts, before)  # deterministic


def test_the_plan_splits_row_groups_only_when_there_are_too_few(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": np.arange(10_000, dtype=np.float64)}), path, row_group_size=5_000)
    source = open_source(path, ["a"], 1_000)
    assert source.plan(1).task_rows is None  # one worker: nothing to balance
    assert open_source(path, ["a"], 1_000).plan(2).task_rows == 2_000  # 6 tasks wanted, 2 groups: split
    plan = source.plan(4)  # 12 tasks wanted from 10,000 rows: ranges of 1,000 rows (whole chunks)
    assert plan.task_rows == 1_000
    tasks = list(source.tasks(plan))
    assert tasks == list(source.tasks(plan))
    expected = [(0, k * 1000, (k + 1) * 1000) for k in range(5)]
    assert [(t.row_group, t.start, t.stop) for t in tasks[:6]] == [*expected, (1, 0, 1000)]
    assert len({t.task_id for t in tasks}) == len(tasks) == 10
    assert open_source(path, ["a"], 1_000).plan(64).task_rows == 1_000  # never less than a chunk


def write_inputs(tmp_path: Path, n: int) -> dict[str, Path]:
    """The same n rows (a, b) with a few bad ones, as Parquet (one row group), CSV and JSON Lines."""
    a = [float(i) for i in range(n)]
    b = [1.0] * n
    rows: list[str] = []
    jsonl: list[bytes] = []
    for i in range(n):
        if i % 97 == 5:  # a malformed line (CSV: a field too many; JSON: not JSON)
            rows.append(f"{a[i]},{b[i]},9")
            jsonl.append(b"not json")
        elif i % 89 == 7:  # a value that cannot be cast
            rows.append(f"x{i},{b[i]}")
            jsonl.append(orjson.dumps({"a": f"x{i}", "b": b[i]}))
        else:
            rows.append(f"{a[i]},{b[i]}")
            jsonl.append(orjson.dumps({"a": a[i], "b": b[i]}))
    csv = tmp_path / "in.csv"
    csv.write_text("a,b\n" + "\n".join(rows) + "\n")
    js = tmp_path / "in.jsonl"
    js.write_bytes(b"\n".join(jsonl) + b"\n")
    parquet = tmp_path / "in.parquet"
    missing = [None if i % 89 == 7 else b[i] for i in range(n)]  # a feature missing instead
    pq.write_table(pa.table({"a": a, "b": missing}), parquet, row_group_size=n)
    return {"csv": csv, "jsonl": js, "parquet": parquet}


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_fine_tasks_score_every_row_once_with_the_same_errors(tmp_path: Path, fmt: str) -> None:
    src = write_inputs(tmp_path, 3000)[fmt]
    whole = BatchOptions(workers=1, chunk_rows=128, max_error_rate=1.0, task_bytes=1 << 30)
    fine = BatchOptions(workers=2, chunk_rows=128, max_error_rate=1.0, task_rows=256, task_bytes=997)
    one = run_batch("fixture_models:add", src, tmp_path / "one.parquet", whole)
    many = run_batch("fixture_models:add", src, tmp_path / "many.parquet", fine)
    assert one.tasks == 1 and many.tasks > 10
    assert (many.rows, many.scored, many.failed) == (one.rows, one.scored, one.failed)
    assert many.rows == 3000
    drop = ["computed_at"]
    assert pq.read_table(tmp_path / "many.parquet").drop(drop).equals(
        pq.read_table(tmp_path / "one.parquet").drop(drop))
    assert one.errors_path is not None and many.errors_path is not None
    errors_one = one.errors_path.read_text().splitlines()
    errors_many = many.errors_path.read_text().splitlines()
    def same(line: str) -> tuple[int, str]:  # pyarrow's streaming CSV reader does not number bad lines
        e = orjson.loads(line)
        return e["row"], e["reason"].split(": ", 1)[1] if fmt == "csv" and e["row"] < 0 else e["reason"]

    assert sorted(map(same, errors_many)) == sorted(map(same, errors_one))
    # rows count from the input's first row, as in one task (CSV, JSON Lines: unreadable lines not counted)
    malformed = [i for i in range(3000) if i % 97 == 5] if fmt != "parquet" else []
    expected = [i - sum(j < i for j in malformed) for i in range(3000) if i % 89 == 7 and i not in malformed]
    assert sorted(e["row"] for e in map(orjson.loads, errors_many) if e["row"] >= 0) == expected
    assert sum(orjson.loads(e)["row"] < 0 for e in errors_many) == len(malformed)


def test_a_resumed_run_cuts_the_input_as_the_run_it_continues(tmp_path: Path) -> None:
    src = write_inputs(tmp_path, 3000)["csv"]
    out = tmp_path / "out.parquet"
    first = BatchOptions(workers=2, chunk_rows=128, task_bytes=4000, max_error_rate=0.0)
    with pytest.raises(TooManyBadRows):
        run_batch("fixture_models:add", src, out, first)
    run = orjson.loads((staging_dir(out) / "run.json").read_bytes())
    assert run["plan"] == Plan(None, 4000).to_dict()
    # other workers, no --task-bytes: the recorded plan still applies, so every task is found done
    result = run_batch("fixture_models:add", src, out,
                       BatchOptions(workers=1, chunk_rows=128, resume=True, max_error_rate=1.0))
    assert result.resumed_tasks == result.tasks == 8  # a new plan for 1 worker would be 1 task
    assert result.rows == 3000 and pq.read_table(out).num_rows == result.scored
