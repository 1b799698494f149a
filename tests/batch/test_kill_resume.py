"""Exactly once: a batch run killed mid-way (SIGKILL, or Ctrl-C) and resumed scores every row once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from terminal import sigint_as_in_a_terminal

from augury.batch import BatchOptions, run_batch, staging_dir
from augury.verify.source import PredictionsFile

FIXTURES = Path(__file__).parent.parent / "fixtures"
N = 20_000


def start_run(tmp_path: Path, workers: int, output: str = "out.parquet",
              ) -> tuple[subprocess.Popen[bytes], Path, Path]:
    src = tmp_path / "in.parquet"
    table = pa.table({"id": np.arange(N), "a": np.arange(N, dtype=np.float64), "b": np.ones(N)})
    pq.write_table(table, src, row_group_size=250)
    out = tmp_path / output
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
        "AUGURY_TEST_SLEEP": "0.03",
    }
    target = f"{out}/" if output.endswith("/") else str(out)
    cmd = [sys.executable, "-m", "augury.cli", "batch", "fixture_models:slow_add", str(src), "-o", target]
    cmd += ["--key", "id", "--chunk-rows", "250", "--workers", str(workers)]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        preexec_fn=sigint_as_in_a_terminal,
    )
    staging = staging_dir(out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(staging.glob("part-*.parquet"))) < 10:
        time.sleep(0.02)
    return proc, src, out


def resume_and_check(src: Path, out: Path, finished: int) -> None:
    assert 10 <= finished < N // 250, "the run should have been stopped midway"
    assert not out.exists()
    result = run_batch(
        "fixture_models:slow_add",
        src,
        out,
        BatchOptions(key_columns=("id",), chunk_rows=250, workers=1, resume=True),
    )
    assert result.resumed_tasks >= finished
    with PredictionsFile(out) as f:  # a file, or a dataset folder read through its manifest
        table = pa.Table.from_batches(list(f.batches(f.schema.names)), schema=f.schema)
    ids = table.column("id").to_numpy()
    assert len(ids) == N and len(np.unique(ids)) == N
    np.testing.assert_array_equal(np.sort(ids), np.arange(N))
    np.testing.assert_array_equal(table.column("value").to_numpy(), ids + 1.0)
    assert not staging_dir(out).exists()


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "victim"), [(1, "group"), (2, "group"), (2, "driver")])
def test_kill_9_then_resume_scores_each_row_exactly_once(tmp_path: Path, workers: int, victim: str) -> None:
    proc, src, out = start_run(tmp_path, workers)
    children = psutil.Process(proc.pid).children(recursive=True)
    if victim == "group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:  # only the driver: its workers must not live on as orphans
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()  # type: ignore[union-attr]
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "workers outlived their driver"
    resume_and_check(src, out, len(list(staging_dir(out).glob("part-*.parquet"))))


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["group", "driver"])
def test_kill_9_then_resume_a_dataset_scores_each_row_exactly_once(tmp_path: Path, victim: str) -> None:
    proc, src, out = start_run(tmp_path, 2, "preds/")
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL) if victim == "group" else os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()  # type: ignore[union-attr]
    psutil.wait_procs(children, timeout=10)
    resume_and_check(src, out, len(list(staging_dir(out).glob("part-*.parquet"))))
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert len(parts) == N // 250 and not list(out.glob("errors-*")) and not (out / "run.json").exists()


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    proc, src, out = start_run(tmp_path, workers=2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert b"interrupted" in stderr and b"Traceback" not in stderr
    resume_and_check(src, out, len(list(staging_dir(out).glob("part-*.parquet"))))
