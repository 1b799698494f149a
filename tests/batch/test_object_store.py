"""Batch runs on an object store: inputs read from and datasets written to a real S3 endpoint (moto's
server on 127.0.0.1, spoken to over HTTP by pyarrow's own S3 filesystem), committed by the manifest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch
from augury.batch import location as loc
from augury.batch.dataset import MANIFEST
from augury.batch.sources import open_source
from augury.errors import BatchError, InputError, MissingExtraError
from augury.publish import publish_predictions
from augury.store import SQLiteStore
from augury.verify import Checks, verify
from augury.verify.source import PredictionsFile

FIXTURES = Path(__file__).parent.parent / "fixtures"
def put(url: str, table: pa.Table, **kwargs: object) -> None:
    fs, path = loc.filesystem(url)
    pq.write_table(table, path, filesystem=fs, **kwargs)


def names(url: str) -> list[str]:
    prefix = loc.filesystem(url)[1] + "/"
    return sorted(f.path[len(prefix):] for f in loc.listing(url))


def read_all(path: str | Path) -> pa.Table:
    with PredictionsFile(path) as f:
        return pa.Table.from_batches(list(f.batches(f.schema.names)), schema=f.schema)


def features(n: int = 3000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"id": np.arange(n, dtype=np.int64), **{f"f{i}": rng.normal(size=n) for i in range(4)}})


@pytest.mark.parametrize("fmt,engine", [("parquet", "processes"), ("parquet", "threads"), ("csv", "inline"),
                                        ("jsonl", "inline")])
def test_s3_input_to_s3_dataset_gives_the_local_predictions(hgb_model: Path, tmp_path: Path, s3: str,
                                                            fmt: str, engine: str) -> None:
    table = features()
    local = tmp_path / "in"
    local.mkdir()
    for i, piece in enumerate((table.slice(0, 1800), table.slice(1800))):  # a folder of two files
        name = f"part{i}.{fmt}"
        if fmt == "parquet":
            pq.write_table(piece, local / name, row_group_size=500)
            put(f"{s3}/in/{name}", piece, row_group_size=500)
        else:
            if fmt == "csv":
                pacsv.write_csv(piece, local / name)
            else:
                (local / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in piece.to_pylist()))
            loc.write_bytes(f"{s3}/in/{name}", (local / name).read_bytes())
    options = BatchOptions(key_columns=("id",), workers=2, chunk_rows=256, engine=engine, task_bytes=20_000)
    here = run_batch(str(hgb_model), local, tmp_path / "preds.parquet", options)
    there = run_batch(str(hgb_model), f"{s3}/in/", f"{s3}/preds/", options)
    assert there.output == f"{s3}/preds/" and there.rows == there.scored == here.rows == 3000
    assert there.tasks == here.tasks > 2
    drop = ["computed_at"]
    assert read_all(f"{s3}/preds/").drop(drop).equals(pq.read_table(tmp_path / "preds.parquet").drop(drop))
    manifest = orjson.loads(loc.read_bytes(f"{s3}/preds/{MANIFEST}"))
    assert names(f"{s3}/preds") == sorted([MANIFEST, *(p["name"] for p in manifest["parts"])])  # no run state
    assert manifest["fingerprint"]["input"][0]["path"] == f"{s3}/in/part0.{fmt}"


def test_dask_workers_read_and_write_the_object_store_themselves(tmp_path: Path, s3: str,
                                                                 s3_env: dict[str, str]) -> None:
    """The Dask engine on S3: each worker process reads its task's input and uploads its part itself
    (its environment names the endpoint, as a cluster's workers must have it: Dask's nanny environ)."""
    import dask

    table = pa.table({"a": np.arange(4000.0), "b": np.ones(4000)})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=500)
    put(f"{s3}/in.parquet", table, row_group_size=500)
    here = run_batch("fixture_models:add", tmp_path / "in.parquet", tmp_path / "p.parquet",
                     BatchOptions(workers=1))
    with dask.config.set({"distributed.nanny.environ": s3_env}):
        there = run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/",
                          BatchOptions(workers=2, engine="dask"))
    assert there.rows == there.scored == 4000 and there.tasks == 8
    drop = ["computed_at"]
    assert read_all(f"{s3}/preds/").drop(drop).equals(pq.read_table(tmp_path / "p.parquet").drop(drop))
    assert here.rows == 4000


def test_rows_that_cannot_be_scored_are_in_the_errors_file_beside_the_dataset(tmp_path: Path,
                                                                              s3: str) -> None:
    table = pa.table({"a": [1.0, 2000.0, 3.0, None, 5.0] * 40, "b": [1.0] * 200})
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=50)
    put(f"{s3}/in.parquet", table, row_group_size=50)
    options = BatchOptions(workers=1, chunk_rows=16, max_error_rate=0.5)
    here = run_batch("fixture_models:picky_add", tmp_path / "in.parquet", tmp_path / "p.parquet", options)
    there = run_batch("fixture_models:picky_add", f"{s3}/in.parquet", f"{s3}/preds/", options)
    assert there.failed == here.failed == 80 and there.errors_path == f"{s3}/preds.errors.jsonl"
    lines = [orjson.loads(x) for x in loc.read_bytes(f"{s3}/preds.errors.jsonl").splitlines()]
    expected = [orjson.loads(x) for x in (tmp_path / "p.errors.jsonl").read_bytes().splitlines()]
    assert [(x["row"], x["reason"]) for x in lines] == [(x["row"], x["reason"]) for x in expected]


def interrupt_after(tasks: int) -> object:
    seen = []

    def on_progress(progress: object) -> None:
        seen.append(progress)
        if len(seen) == tasks:
            raise KeyboardInterrupt

    return on_progress


def test_resume_on_s3_scores_only_what_is_missing_and_a_second_attempt_is_never_read(s3: str) -> None:
    table = pa.table({"a": np.arange(1200.0), "b": np.ones(1200)})
    put(f"{s3}/in.parquet", table, row_group_size=100)
    options = BatchOptions(workers=1, chunk_rows=50)
    with pytest.raises(KeyboardInterrupt):
        run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options,
                  on_progress=interrupt_after(5))  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"incomplete prediction dataset: it has no _manifest\.json"):
        PredictionsFile(f"{s3}/preds/")
    # a task finished twice (a Dask worker thought dead, and its retry): a second complete part and marker
    run_id = orjson.loads(loc.read_bytes(f"{s3}/preds/_augury-run/run.json"))["run_id"]
    marker = next(n for n in names(f"{s3}/preds") if n.startswith(f"_augury-run/{run_id}/done-00000-000002-"))
    first = orjson.loads(loc.read_bytes(f"{s3}/preds/{marker}"))
    twin = f"part-00000-000002-{run_id}00000000.parquet"
    fs, root = loc.filesystem(f"{s3}/preds")
    fs.copy_file(f"{root}/{first['part']}", f"{root}/{twin}")
    loc.write_bytes(f"{s3}/preds/_augury-run/{run_id}/done-00000-000002-00000000.json",
                    orjson.dumps({**first, "part": twin}))

    resumed = run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/",
                        BatchOptions(workers=1, chunk_rows=50, resume=True))
    assert resumed.resumed_tasks == 5 and resumed.tasks == 12 and resumed.rows == resumed.scored == 1200
    manifest = orjson.loads(loc.read_bytes(f"{s3}/preds/{MANIFEST}"))
    listed = [p["name"] for p in manifest["parts"]]
    assert len(listed) == 12 and sum(p["rows"] for p in manifest["parts"]) == 1200
    assert twin in listed and first["part"] not in listed  # one attempt of task 2, chosen by its name
    assert names(f"{s3}/preds") == sorted([MANIFEST, *listed])  # the other attempt removed
    got = read_all(f"{s3}/preds/")
    assert got.num_rows == 1200 and sorted(got.column("value").to_pylist()) == [a + 1 for a in range(1200)]


def test_a_new_run_replaces_the_dataset_and_removes_an_interrupted_runs_parts(s3: str) -> None:
    put(f"{s3}/in.parquet", pa.table({"a": np.arange(600.0), "b": np.ones(600)}), row_group_size=100)
    options = BatchOptions(workers=1, chunk_rows=50)
    run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds", options)
    before = orjson.loads(loc.read_bytes(f"{s3}/preds/{MANIFEST}"))
    with pytest.raises(KeyboardInterrupt):
        run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options,
                  on_progress=interrupt_after(3))  # type: ignore[arg-type]
    assert read_all(f"{s3}/preds/").num_rows == 600  # the previous dataset, as it was
    assert orjson.loads(loc.read_bytes(f"{s3}/preds/{MANIFEST}")) == before
    result = run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options)
    assert any("discarded an interrupted run's 3 finished task(s)" in n for n in result.notes)
    listed = [p["name"] for p in orjson.loads(loc.read_bytes(f"{s3}/preds/{MANIFEST}"))["parts"]]
    assert names(f"{s3}/preds") == sorted([MANIFEST, *listed]) and read_all(f"{s3}/preds/").num_rows == 600
    # as the input of another run, the dataset is the parts its manifest lists, not a stray beside them
    fs, root = loc.filesystem(f"{s3}/preds")
    fs.copy_file(f"{root}/{listed[0]}", f"{root}/part-00000-000000-0123456789abcdef.parquet")
    source = open_source(f"{s3}/preds/", ["value"], 100)
    assert source.files == [f"{s3}/preds/{n}" for n in listed] and source.total_rows == 600


def test_publish_and_verify_read_an_s3_dataset_and_refuse_one_without_manifest(
        hgb_model: Path, tmp_path: Path, s3: str) -> None:
    put(f"{s3}/in.parquet", features(), row_group_size=500)
    options = BatchOptions(key_columns=("id",), workers=1)
    run_batch(str(hgb_model), f"{s3}/in.parquet", f"{s3}/preds/", options)
    report = verify(f"{s3}/preds/", Checks())
    assert report.passed and report.profile.row_count == 3000 and str(report.path) == f"{s3}/preds/"
    store = SQLiteStore(tmp_path / "s.db")
    try:
        result = publish_predictions(f"{s3}/preds/", store, Checks(), writers=1)
        assert result.version.row_count == 3000
        assert all(g is not None for g in store.get_many(["0", "2999"]))
        fs, root = loc.filesystem(f"{s3}/preds")
        fs.delete_file(f"{root}/{MANIFEST}")
        with pytest.raises(InputError, match="incomplete prediction dataset"):
            publish_predictions(f"{s3}/preds/", store, Checks())
        assert len(store.versions()) == 1
    finally:
        store.close()


def test_what_an_object_store_cannot_hold_is_refused_in_one_line(s3: str) -> None:
    put(f"{s3}/in.parquet", pa.table({"a": [1.0], "b": [1.0]}))
    loc.write_bytes(f"{s3}/mine/notes.txt", b"keep me")
    cases = [
        ("s3://no-such-bucket/preds/", InputError, "no-such-bucket"),
        (f"{s3}/preds.parquet", InputError, "writes a prediction dataset"),
        (s3[: s3.index("/", 5) + 1], InputError, "name a prefix inside the bucket"),
        (f"{s3}/mine/", InputError, "not a prediction dataset's"),
        (f"{s3}/preds/?endpoint_override=x", InputError, "with options"),
        ("nosuchscheme://b/preds/", InputError, "no filesystem knows nosuchscheme://"),
        ("abfs://container/preds/", MissingExtraError, "pip install 'augury[azure]'"),
    ]
    for output, kind, text in cases:
        with pytest.raises(kind, match=text.replace("[", r"\[").replace("?", r"\?")):
            run_batch("fixture_models:add", f"{s3}/in.parquet", output, BatchOptions(workers=1))
    assert loc.read_bytes(f"{s3}/mine/notes.txt") == b"keep me"
    with pytest.raises(InputError, match="does not exist"):
        run_batch("fixture_models:add", f"{s3}/nothing/", f"{s3}/preds/", BatchOptions(workers=1))
    with pytest.raises(InputError, match="no-such-bucket"):
        run_batch("fixture_models:add", "s3://no-such-bucket/in.parquet", f"{s3}/preds/",
                  BatchOptions(workers=1))


def test_the_command_line_names_an_incomplete_s3_dataset_in_one_line(s3: str, s3_env: dict[str, str]) -> None:
    loc.write_bytes(f"{s3}/preds/part-00000-000000-0123456789abcdef.parquet", b"")
    env = {**os.environ, **s3_env, "PYTHONPATH": str(FIXTURES)}
    proc = subprocess.run([sys.executable, "-m", "augury.cli", "verify", f"{s3}/preds/"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "incomplete prediction dataset: it has no _manifest.json" in proc.stderr


@pytest.mark.parametrize("log", ["parquet", "csv", "jsonl"])
def test_advise_reads_its_catalogue_and_traffic_log_from_the_object_store(hgb_model: Path, tmp_path: Path,
                                                                          s3: str, log: str) -> None:
    from augury.advise import advise

    table = features(600)
    put(f"{s3}/catalogue.parquet", table)
    ids = pa.table({"id": np.random.default_rng(5).integers(0, 600, 2000)})
    if log == "parquet":
        put(f"{s3}/log.parquet", ids)
    elif log == "csv":
        pacsv.write_csv(ids, tmp_path / "log.csv")
        loc.write_bytes(f"{s3}/log.csv", (tmp_path / "log.csv").read_bytes())
    else:
        loc.write_bytes(f"{s3}/log.jsonl", b"".join(orjson.dumps(r) + b"\n" for r in ids.to_pylist()))
    a = advise(str(hgb_model), f"{s3}/catalogue.parquet", key_columns=["id"], traffic=f"{s3}/log.{log}",
               qps=100, latency_slo_ms=100, cores=2, budget_s=2)
    t = a.measurements.traffic
    assert t is not None and t.key == "id" and t.catalogue_share == 1.0
    assert a.measurements.store is not None and a.measurements.store.rows_published == 600


def test_a_process_that_used_an_object_store_spawns_its_workers_and_writers(hgb_model: Path, s3: str) -> None:
    """pyarrow's S3 client runs native threads that `threading` does not count: a process that used it
    never forks its batch workers or its publish's writers (a forked child would inherit those threads'
    locks in whatever state they were)."""
    from augury import publish_pool
    from augury.batch.engine import LocalEngine, make_engine

    loc.listing(f"{s3}/")  # (this process now holds an S3 filesystem)
    assert loc.used_object_store()
    for may_fork in (False, True):
        engine = make_engine("processes", str(hgb_model), None, "auto", 2, may_fork=may_fork)
        try:
            assert isinstance(engine, LocalEngine) and engine.start_method == "spawn"
        finally:
            engine.close()
    assert publish_pool._context().get_start_method() == "spawn"


def test_a_run_whose_parts_another_run_removed_commits_nothing(s3: str) -> None:
    """Object stores have no lock: a second run on the same dataset takes the first's state for an
    interrupted run's and removes its parts. The first then fails before its manifest, committing nothing
    (it wrote a manifest naming parts that were gone)."""
    put(f"{s3}/in.parquet", pa.table({"a": np.arange(400.0), "b": np.ones(400)}), row_group_size=100)
    options = BatchOptions(workers=1, chunk_rows=50)
    run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options)
    before = loc.read_bytes(f"{s3}/preds/{MANIFEST}")
    fs = loc.filesystem(f"{s3}/preds")[0]

    def another_run_removes_a_part(progress: object) -> None:
        for f in loc.listing(f"{s3}/preds", recursive=False):
            name = f.path.rsplit("/", 1)[-1]
            if name.startswith("part-") and name.encode() not in before:  # (one of this run's)
                fs.delete_file(f.path)
                return

    with pytest.raises(BatchError, match="nothing was committed"):
        run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options,
                  on_progress=another_run_removes_a_part)  # type: ignore[arg-type]
    assert loc.read_bytes(f"{s3}/preds/{MANIFEST}") == before and read_all(f"{s3}/preds/").num_rows == 400


def archive(url: str, s3_env: dict[str, str]) -> None:
    """Move the object at `url` to Glacier, as a lifecycle rule does: it is listed, but cannot be read."""
    import boto3

    bucket, key = url.removeprefix("s3://").split("/", 1)
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).copy_object(
        Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key}, StorageClass="GLACIER")


def test_a_manifest_that_cannot_be_read_loses_no_committed_part_and_leaves_no_stray(
        s3: str, s3_env: dict[str, str], caplog: pytest.LogCaptureFixture) -> None:
    """The dataset's manifest cannot be read (archived here; equally a damaged object or a failed request).
    A run killed after its manifest, before its cleanup, left run.json naming the committed parts' run, and
    an earlier cleanup left a stray part. A new run must not take the committed parts for an interrupted
    run's (they were removed: the dataset lost), and a commit must still remove every part it replaces,
    whatever its name (they stayed, silently, for good)."""
    put(f"{s3}/in.parquet", pa.table({"a": np.arange(400.0), "b": np.ones(400)}), row_group_size=100)
    options = BatchOptions(workers=1, chunk_rows=50)
    run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options)
    manifest = loc.read_bytes(f"{s3}/preds/{MANIFEST}")
    committed = [p["name"] for p in orjson.loads(manifest)["parts"]]
    run_id = committed[0][: -len(".parquet")].rsplit("-", 1)[1][:8]
    loc.write_bytes(f"{s3}/preds/_augury-run/run.json", orjson.dumps({"run_id": run_id}))
    fs, root = loc.filesystem(f"{s3}/preds")
    stray = "part-00000-000000-0123456789abcdef.parquet"
    fs.copy_file(f"{root}/{committed[0]}", f"{root}/{stray}")
    archive(f"{s3}/preds/{MANIFEST}", s3_env)

    with pytest.raises(KeyboardInterrupt):
        run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options,
                  on_progress=interrupt_after(1))  # type: ignore[arg-type]
    assert set(committed) <= set(names(f"{s3}/preds"))  # every committed part kept
    loc.write_bytes(f"{s3}/preds/{MANIFEST}", manifest)  # (readable again: the dataset is whole)
    assert read_all(f"{s3}/preds/").num_rows == 400
    archive(f"{s3}/preds/{MANIFEST}", s3_env)

    with caplog.at_level("WARNING", logger="augury.batch.object_output"):
        result = run_batch("fixture_models:add", f"{s3}/in.parquet", f"{s3}/preds/", options)
    assert result.rows == 400 and "is not a readable prediction dataset manifest" in caplog.text
    listed = [p["name"] for p in orjson.loads(loc.read_bytes(f"{s3}/preds/{MANIFEST}"))["parts"]]
    assert names(f"{s3}/preds") == sorted([MANIFEST, *listed])  # no committed part, stray or interrupted part
    assert read_all(f"{s3}/preds/").num_rows == 400
