"""Exactly once: a batch run killed with SIGKILL mid-way and resumed scores every row once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch, staging_dir

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_then_resume_scores_each_row_exactly_once(tmp_path: Path, workers: int) -> None:
    n = 20_000
    src = tmp_path / "in.parquet"
    pq.write_table(
        pa.table({"id": np.arange(n), "a": np.arange(n, dtype=np.float64), "b": np.ones(n)}),
        src,
        row_group_size=250,
    )
    out = tmp_path / "out.parquet"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
        "AUGURY_TEST_SLEEP": "0.03",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "augury.cli",
            "batch",
            "fixture_models:slow_add",
            str(src),
            "-o",
            str(out),
            "--key",
            "id",
            "--chunk-rows",
            "250",
            "--workers",
            str(workers),
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    staging = staging_dir(out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(staging.glob("part-*.parquet"))) < 10:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(staging.glob("part-*.parquet")))
    assert 10 <= finished < n // 250, "the run should have been killed midway"
    assert not out.exists()

    result = run_batch(
        "fixture_models:slow_add",
        src,
        out,
        BatchOptions(key_columns=("id",), chunk_rows=250, workers=1, resume=True),
    )
    assert result.resumed_tasks >= finished
    table = pq.read_table(out)
    ids = table.column("id").to_numpy()
    assert len(ids) == n and len(np.unique(ids)) == n
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    np.testing.assert_array_equal(table.column("value").to_numpy(), ids + 1.0)
    assert not staging.exists()
