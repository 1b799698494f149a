"""The Dask engine (`--engine dask`): the process engine's output on a Dask cluster, exactly once when a
worker or the driver dies, and clear errors when the cluster or the extra is missing.

One in-process LocalCluster (2 workers, one thread each) is shared by the module: starting one costs
~2-3 s. One test runs a cluster of real worker processes and kills one of them mid-run.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster
from terminal import sigint_as_in_a_terminal

from augury.batch import BatchOptions, run_batch, staging_dir
from augury.batch.dask_worker import LoadModel, info_on_worker, loads_in_worker, pid
from augury.batch.dataset import MANIFEST
from augury.batch.sources import open_source
from augury.batch.worker import Job
from augury.errors import ConfigError
from augury.verify.source import PredictionsFile

FIXTURES = Path(__file__).parent.parent / "fixtures"
N = 20_000
#: no dashboard, the scheduler's HTTP endpoints on a free port (8787 may be taken on a shared machine)
QUIET = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": ":0"}}


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, **QUIET) as cluster:
        yield cluster.scheduler_address


def read_all(path: Path) -> pa.Table:
    with PredictionsFile(path) as f:
        return pa.Table.from_batches(list(f.batches(f.schema.names)), schema=f.schema)


def ab_rows(n: int) -> pa.Table:
    """`id`, `a`, `b` with a few rows `add` cannot score (a null feature, a value that is not a number)."""
    a = [str(float(i)) for i in range(n)]
    a[7], a[n // 2] = None, "abc"  # type: ignore[call-overload]
    return pa.table({"id": np.arange(n), "a": a, "b": ["1.0"] * n})


def write(table: pa.Table, path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(table, path, row_group_size=len(table) // 5)
    elif path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in table.to_pylist()) + b"{bad json\n")
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
@pytest.mark.parametrize("output", ["out.parquet", "preds/"])
def test_dask_writes_what_the_process_engine_writes(scheduler: str, tmp_path: Path, suffix: str,
                                                     output: str) -> None:
    src = write(ab_rows(5000), tmp_path / f"in{suffix}")
    common = BatchOptions(key_columns=("id",), workers=2, chunk_rows=256, max_error_rate=0.5,
                          task_bytes=16 << 10)
    for name in ("local", "dask"):
        (tmp_path / name).mkdir()
    local = run_batch("fixture_models:add", src, tmp_path / "local" / output,
                      replace(common, engine="processes"))
    # the output as a file:// URL (a dataset's keeps its trailing slash)
    url = (tmp_path / "dask" / output).as_uri() + ("/" if output.endswith("/") else "")
    dask = run_batch("fixture_models:add", src.as_uri(), url,
                     replace(common, engine="dask", scheduler=scheduler))
    assert (dask.rows, dask.scored, dask.failed, dask.tasks) == (local.rows, local.scored, local.failed,
                                                                local.tasks)
    assert dask.failed == (3 if suffix == ".jsonl" else 2) and dask.tasks > 2
    drop = ["computed_at"]
    assert read_all(dask.output).drop(drop).equals(read_all(local.output).drop(drop))
    errors = [p.read_bytes() for p in (local.errors_path, dask.errors_path) if p is not None]
    assert len(errors) == 2 and errors[0] == errors[1]  # absolute input paths: the same file names
    if output.endswith("/"):
        assert not [p for p in dask.output.iterdir() if p.name != MANIFEST and not p.name.startswith("part-")]


def test_a_folder_of_files_and_a_real_model_give_the_same_predictions(scheduler: str, hgb_model: Path,
                                                                      tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(3):
        cols = {f"f{k}": rng.normal(size=1000) for k in range(4)}
        pq.write_table(pa.table({"id": np.arange(1000) + 1000 * i, **cols}), folder / f"{i}.parquet",
                       row_group_size=250)
    options = BatchOptions(key_columns=("id",), workers=2, chunk_rows=128)
    local = run_batch(str(hgb_model), folder, tmp_path / "local.parquet", options)
    before = loads_in_worker()  # the in-process workers share this module's cache
    dask = run_batch(str(hgb_model), folder, tmp_path / "dask.parquet",
                     replace(options, engine="dask", scheduler=scheduler))
    assert loads_in_worker() - before <= 1 < dask.tasks  # once for every task, not once per task
    assert dask.evaluator == local.evaluator and dask.rows == 3000
    drop = ["computed_at"]
    assert pq.read_table(tmp_path / "dask.parquet").drop(drop).equals(
        pq.read_table(tmp_path / "local.parquet").drop(drop))


def test_a_workers_plugin_loads_the_model_as_it_starts_and_the_run_loads_it_no_more(
        hgb_model: Path, tmp_path: Path) -> None:
    """The run's own LocalCluster starts each worker with `LoadModel`: the model loads while the cluster
    starts, and the driver's first call finds it loaded (in-process workers: this module's cache)."""
    model = tmp_path / "own.joblib"  # a reference no other test loaded
    model.write_bytes(hgb_model.read_bytes())
    before = loads_in_worker()
    plugin = LoadModel(str(model), None, "auto")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, plugins=(plugin,),
                      **QUIET) as cluster, Client(cluster, set_as_default=False) as client:
        deadline = time.monotonic() + 30
        while loads_in_worker() == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loads_in_worker() == before + 1  # nothing asked for it yet
        info = client.submit(info_on_worker, str(model), None, "auto", pure=False).result()
        assert info.inputs.names == ["f0", "f1", "f2", "f3"] and loads_in_worker() == before + 1


def test_a_cached_model_of_another_version_is_loaded_again(hgb_model: Path, tmp_path: Path) -> None:
    """A long-lived worker keeps models between runs: when the file was replaced since, the run's
    version is loaded, not the cached one refused."""
    model = tmp_path / "replaced.joblib"
    model.write_bytes(hgb_model.read_bytes())
    before = loads_in_worker()
    first = info_on_worker(str(model), None, "auto")
    assert info_on_worker(str(model), None, "auto", first.version) == first
    model.write_bytes(hgb_model.read_bytes() + b"\0")  # joblib reads up to its end: another version
    second = info_on_worker(str(model), None, "auto", "sha256:0000")
    assert second.version != first.version and loads_in_worker() == before + 2


FORKED = """
import json, os, sys
from augury.batch.dask_engine import PRELOAD_ENV, DaskEngine
from augury.batch.dask_worker import loads_in_worker
engine = DaskEngine(sys.argv[1], None, "auto", 2)
try:
    info = engine.model_info()
    loads = sorted(engine.client.run(loads_in_worker).values())
    print(json.dumps({"loads": loads, "evaluator": info.evaluator,
                      "env": PRELOAD_ENV in os.environ}))
finally:
    engine.close()
"""


@pytest.mark.slow
def test_the_runs_own_cluster_forks_its_workers_with_the_model_loaded(hgb_model: Path) -> None:
    """Its workers are forked from a fork server that loaded the model (`dask_forkserver`): none loads
    it itself, they score with the run's evaluator, and the model's reference is not left in the driver's
    environment."""
    proc = subprocess.run([sys.executable, "-c", FORKED, str(hgb_model)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = orjson.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"loads": [0, 0], "evaluator": "hgb-compiled", "env": False}


def test_the_plan_is_cut_for_the_clusters_threads_not_this_machines(scheduler: str, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": np.arange(4096.0), "b": np.ones(4096)}), src)  # one row group
    options = BatchOptions(chunk_rows=256, workers=16, engine="dask", scheduler=scheduler)
    result = run_batch("fixture_models:add", src, tmp_path / "o.parquet", options)
    # 3 tasks a thread of 2, in whole chunks: 768 rows each (16 threads would have cut 16 of 256)
    assert result.workers == 2 and result.tasks == 6


def test_tasks_and_the_job_are_small_and_picklable(tmp_path: Path) -> None:
    src = write(ab_rows(5000), tmp_path / "in.csv")
    tasks = list(open_source(src, ["id", "a", "b"], 256).tasks())
    job = Job("fixture_models:add", None, ("id",), ("id", "a", "b"), 256, str(tmp_path), b"{}" * 200,
              "python", "1")
    for thing in (*tasks, job):
        assert pickle.loads(pickle.dumps(thing)) == thing
    assert max(len(pickle.dumps(t)) for t in tasks) < 512 and len(pickle.dumps(job)) < 1024


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["kill -9", "ctrl-c"])
def test_resume_on_dask_scores_only_the_missing_tasks(scheduler: str, tmp_path: Path, stop: str) -> None:
    """A dataset run on its own LocalCluster of worker processes, killed with kill -9 (its whole process
    group) or stopped by Ctrl-C (exit 130, one line, no traceback from the workers), resumes on a Dask
    cluster, exactly once."""
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": np.arange(N), "a": np.arange(N, dtype=np.float64), "b": np.ones(N)}),
                   src, row_group_size=250)
    out = tmp_path / "preds"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FIXTURES), os.environ.get("PYTHONPATH", "")]),
           "AUGURY_TEST_SLEEP": "0.03"}
    cmd = [sys.executable, "-m", "augury.cli", "batch", "fixture_models:slow_add", str(src), "-o", f"{out}/",
           "--key", "id", "--chunk-rows", "250", "--workers", "2", "--engine", "dask"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, preexec_fn=sigint_as_in_a_terminal)
    staging = staging_dir(out)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(list(staging.glob("part-*.parquet"))) < 10:
        time.sleep(0.02)
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, signal.SIGKILL if stop == "kill -9" else signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    if stop == "ctrl-c":
        assert proc.returncode == 130 and b"Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith(b"augury: interrupted")
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "workers outlived their driver"
    finished = len(list(staging.glob("part-*.parquet")))
    assert 10 <= finished < N // 250 and not out.exists()
    result = run_batch("fixture_models:slow_add", src, out,
                       BatchOptions(key_columns=("id",), chunk_rows=250, workers=2, resume=True,
                                    engine="dask", scheduler=scheduler))
    assert result.resumed_tasks >= finished and result.tasks == N // 250
    check_exactly_once(read_all(out))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, *sorted(f"part-00000-{g:06d}.parquet"
                                                                       for g in range(N // 250))]


def check_exactly_once(table: pa.Table) -> None:
    ids = table.column("id").to_numpy()
    np.testing.assert_array_equal(np.sort(ids), np.arange(N))  # each row once: none lost, none twice
    np.testing.assert_array_equal(table.column("value").to_numpy(), ids + 1.0)


@pytest.mark.slow
def test_a_worker_process_killed_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Real worker processes; one is killed with SIGKILL while scoring. Dask reruns its tasks elsewhere
    (its nanny starts a new worker) and the run ends with every row once, no stray file in the dataset,
    and each worker having loaded the model once."""
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": np.arange(N), "a": np.arange(N, dtype=np.float64), "b": np.ones(N)}),
                   src, row_group_size=250)
    out = tmp_path / "preds"
    env = {"PYTHONPATH": str(FIXTURES), "AUGURY_TEST_SLEEP": "0.03"}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, **QUIET,
                      env=env) as cluster, Client(cluster, set_as_default=False) as client:
        victim = next(iter(client.run(pid).values()))
        options = BatchOptions(key_columns=("id",), chunk_rows=250, workers=2, engine="dask",
                               scheduler=cluster.scheduler_address)
        results: list[object] = []
        run = threading.Thread(target=lambda: results.append(
            run_batch("fixture_models:slow_add", src, f"{out}/", options)))
        run.start()
        staging = staging_dir(out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(staging.glob("part-*.parquet"))) < 10:
            time.sleep(0.02)
        assert 10 <= len(list(staging.glob("part-*.parquet"))) < N // 250, "killed mid-run"
        os.kill(victim, signal.SIGKILL)
        run.join(timeout=120)
        assert results, "the run did not finish"
        assert victim not in client.run(pid).values()  # its nanny started a new worker
        assert set(client.run(loads_in_worker).values()) == {1}
    check_exactly_once(read_all(out))
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, *sorted(f"part-00000-{g:06d}.parquet"
                                                                       for g in range(N // 250))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def augury(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(FIXTURES), "COLUMNS": "200", **(env or {})})


def test_a_missing_scheduler_is_one_line_and_exit_2(tmp_path: Path) -> None:
    src = write(ab_rows(100), tmp_path / "in.parquet")
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = augury("-m", "augury.cli", "batch", "fixture_models:add", str(src),
                  "-o", str(tmp_path / "o.parquet"), "--engine", "dask", "--scheduler", address)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach the Dask scheduler at {address}" in lines[0]
    assert time.monotonic() - started < 30  # refused at once, not after Dask's connect timeout
    assert not (tmp_path / "o.parquet").exists()


def test_scheduler_needs_the_dask_engine(tmp_path: Path) -> None:
    src = write(ab_rows(100), tmp_path / "in.parquet")
    with pytest.raises(ConfigError, match="--engine dask"):
        run_batch("fixture_models:add", src, tmp_path / "o.parquet", BatchOptions(scheduler="tcp://x:1"))
    with pytest.raises(ConfigError, match="not a scheduler address"):
        run_batch("fixture_models:add", src, tmp_path / "o.parquet",
                  BatchOptions(engine="dask", scheduler="tcp://nohost"))


def test_without_the_extra_the_error_names_augury_dask(tmp_path: Path) -> None:
    """`distributed` made unimportable in a fresh interpreter (as where it is not installed)."""
    src = write(ab_rows(100), tmp_path / "in.parquet")
    code = ("import sys; sys.modules['distributed'] = None; from augury.cli import main; "
            "sys.argv = ['augury', *sys.argv[1:]]; sys.exit(main())")
    proc = augury("-c", code, "batch", "fixture_models:add", str(src), "-o", str(tmp_path / "o.parquet"),
                  "--engine", "dask")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install 'augury[dask]'" in proc.stderr
