"""A Parquet task's rows read a column at a time (`readers._by_column`, bounded memory for the tasks the plan
makes) are the rows the streamed reader gives (`readers._range_batches`, all columns together), for any
range, column types and nulls; and the plan cuts a row group too large to hold decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch.readers import _by_column, _range_batches, read_task
from augury.batch.sources import PARQUET_TASK_BYTES, Task, decoded_row_bytes, open_source

ROWS = 5_000


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Floats, ints with nulls, text, dictionary-encoded text, booleans, timestamps: two row groups,
    small pages so that a range starts and ends inside pages."""
    rng = np.random.default_rng(0)
    n = ROWS
    table = pa.table({
        "f": rng.normal(size=n),
        "i": pa.array([None if k % 7 == 3 else k for k in range(n)], pa.int64()),
        "s": pa.array([f"id-{k}" * (k % 4) for k in range(n)]),
        "d": pa.array([["a", "bb", None][k % 3] for k in range(n)]).dictionary_encode(),
        "b": pa.array([k % 5 == 0 for k in range(n)]),
        "t": pa.array(np.arange(n).astype("datetime64[us]")),
    })
    path = tmp_path_factory.mktemp("readers") / "mixed.parquet"
    pq.write_table(table, path, row_group_size=3_000, data_page_size=1_024)
    return path


@pytest.mark.parametrize(("group", "start", "stop", "chunk"), [
    (0, 0, 3_000, 700), (0, 0, 3_000, 5_000), (0, 1, 2_999, 256), (0, 1_000, 2_000, 1_000),
    (1, 0, 2_000, 333), (1, 1_999, 2_000, 64), (1, 500, 1_700, 1),
])
def test_by_column_gives_the_streamed_rows(mixed: Path, group: int, start: int, stop: int,
                                           chunk: int) -> None:
    columns = ["s", "f", "d", "i", "b", "t"]  # not the file's order
    task = Task("t", str(mixed), "parquet", start, stop, row_group=group)
    pf = pq.ParquetFile(mixed)
    by_column = list(_by_column(pf, task, columns, chunk))
    streamed = list(_range_batches(pf, task, columns, chunk))
    assert all(b.num_rows <= chunk for b in by_column)
    assert sum(b.num_rows for b in by_column) == stop - start
    one = pa.Table.from_batches(by_column).combine_chunks()
    assert one.equals(pa.Table.from_batches(streamed).combine_chunks())
    whole = pf.read_row_group(group, columns=columns).slice(start, stop - start)
    assert one.equals(whole.combine_chunks())
    assert [b.num_rows for b in read_task(task, columns, chunk)] == [b.num_rows for b in by_column]


def test_decoded_row_bytes_reads_the_footer(mixed: Path) -> None:
    meta = pq.ParquetFile(mixed).metadata
    assert decoded_row_bytes(meta, ["f"]) == 8
    assert decoded_row_bytes(meta, ["f", "i", "t"]) == 24
    assert 4 < decoded_row_bytes(meta, ["s"]) < 4 + 20  # text: its stored bytes a row, plus an offset


def test_the_plan_cuts_a_row_group_too_large_to_hold_decoded(tmp_path: Path) -> None:
    rows = PARQUET_TASK_BYTES // 8 + 100_000  # one float column: a group of more than the budget
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"a": np.zeros(rows)}), path, row_group_size=rows)
    source = open_source(path, ["a"], 32_768)
    plan = source.plan(1)
    assert plan.task_rows is not None and plan.task_rows * 8 <= PARQUET_TASK_BYTES
    assert plan.task_rows % 32_768 == 0
    tasks = list(source.tasks(plan))
    assert len(tasks) == 2 and tasks[1].stop == rows
    # 4 workers want 12 tasks: balancing cuts finer still
    assert open_source(path, ["a"], 32_768).plan(4).task_rows == -(-rows // (12 * 32_768)) * 32_768
