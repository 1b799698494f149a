"""Publishing a prediction dataset's parts in parallel (`augury.publish_pool`): the same version as one
stream, on real SQLite files and a real redis-server; a failed part, a writer killed with SIGKILL and
the driver killed with SIGKILL all leave the previous active version intact, and gc cleans what a kill
left."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis

from augury import publish_pool
from augury.batch import BatchOptions, dataset, run_batch
from augury.errors import InputError, VerificationFailed
from augury.publish import publish_predictions
from augury.publish_pool import load_parts, plan, writers_for
from augury.publish_rows import StoreRows
from augury.store import ORPHAN, READY, PredictionStore, open_store
from augury.verify import Checks, Report
from augury.verify.source import PredictionsFile

FIXTURES = Path(__file__).parent / "fixtures"
#: the large dataset: COPIES copies of the small one's 3,000 rows, in PARTS parts.
COPIES, PARTS = 40, 20


@pytest.fixture(scope="module")
def small(hgb_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset written by `augury batch`: 3,000 rows with key column `id`, in 12 parts."""
    folder = tmp_path_factory.mktemp("small")
    n = 3000
    rng = np.random.default_rng(3)
    pq.write_table(pa.table({"id": np.arange(n), **{f"f{i}": rng.normal(size=n) for i in range(4)}}),
                   folder / "features.parquet", row_group_size=250)
    run_batch(str(hgb_model), folder / "features.parquet", folder / "preds",
              BatchOptions(key_columns=("id",), workers=2))
    return folder / "preds"


@pytest.fixture(scope="module")
def large(small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small dataset's rows COPIES times (ids shifted, so every key is new), in PARTS parts: long
    enough to load that a test can stop it midway."""
    with PredictionsFile(small) as f:
        table = pa.Table.from_batches(list(f.batches(f.schema.names)), schema=f.schema)
        fingerprint = dataset.read_manifest(small).fingerprint
    folder = tmp_path_factory.mktemp("large") / "preds"
    folder.mkdir()
    ids = table.column("id")
    copies = [table.set_column(0, "id", pc.add(ids, pa.scalar(k * table.num_rows, ids.type)))
              for k in range(COPIES)]
    whole = pa.concat_tables(copies)
    names = []
    for i, part in enumerate(np.array_split(np.arange(whole.num_rows), PARTS)):
        names.append(f"part-{i:05d}.parquet")
        pq.write_table(whole.take(pa.array(part)), folder / names[-1])
    dataset.commit(folder, names, fingerprint)
    return folder


def all_keys(folder: Path) -> list[str]:
    with PredictionsFile(folder) as f:
        return [str(k) for b in f.batches(["id"]) for k in b.column(0).to_pylist()]


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture()
def store(url: str) -> Iterator[PredictionStore]:
    s = open_store(url)
    yield s
    s.close()


def test_parts_in_parallel_make_the_version_one_stream_makes(small: Path, store: PredictionStore) -> None:
    one = publish_predictions(small, store, Checks(), writers=1).version
    many = publish_predictions(small, store, Checks(), writers=3).version
    assert (one.version, many.version) == ("1", "2") and many.active and many.state == READY
    assert many.row_count == one.row_count == 3000
    assert (many.profile, many.meta, many.columns, many.features_hash) == (
        one.profile, one.meta, one.columns, one.features_hash)
    keys = all_keys(small)
    got = store.get_many(keys)
    store.activate("1")
    want = store.get_many(keys)
    assert [g.store_version for g in got if g] == ["2"] * 3000
    assert [(g.values, g.computed_at, g.features_hash) for g in got if g] == [
        (w.values, w.computed_at, w.features_hash) for w in want if w]


def test_writers_are_spawned_when_the_publishing_process_runs_threads(small: Path, tmp_path: Path) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        assert publish_pool._context().get_start_method() == "spawn"  # (forking a threaded process is unsafe)
        result = publish_predictions(small, store, Checks(), writers=2)
        assert result.writers == 2 and result.version.row_count == 3000 and result.version.active
    finally:
        stop.set()
        thread.join()
        store.close()


def test_a_file_loads_row_group_by_row_group_as_one_stream_does(small: Path, hgb_model: Path,
                                                                 store: PredictionStore) -> None:
    one_file = small.parent / "preds.parquet"
    if not one_file.exists():
        run_batch(str(hgb_model), small.parent / "features.parquet", one_file,
                  BatchOptions(key_columns=("id",), workers=2))
    assert [p.rows for p in plan(one_file).pieces] == [3000]  # (12 row groups of 250: one piece)
    one = publish_predictions(one_file, store, Checks(), writers=3)
    assert one.writers == 1  # (one piece: one stream)
    work = plan(one_file, piece_rows=500)
    assert [(p.rows, p.row_groups) for p in work.pieces] == [(500, (2 * i, 2 * i + 1)) for i in range(6)]
    with PredictionsFile(one_file) as f:
        rows = StoreRows.of(str(one_file), f.layout, f.schema, one.version.model_version)
    many = load_parts(store, work, rows, 3, 3000, ttl_s=None, profile=one.version.profile,  # type: ignore[arg-type]
                      meta=one.version.meta, activate=True)
    assert many.version == "2" and many.active and many.row_count == 3000
    keys = all_keys(small)
    got = store.get_many(keys)
    store.activate("1")
    want = store.get_many(keys)
    assert [(g.values, g.computed_at, g.features_hash) for g in got if g] == [
        (w.values, w.computed_at, w.features_hash) for w in want if w]
    assert len([w for w in want if w]) == 3000


def test_a_failed_part_aborts_the_publish(small: Path, store: PredictionStore) -> None:
    publish_predictions(small, store, Checks(), writers=2)
    with PredictionsFile(small) as f:  # rows said to be of another model version: every part fails
        rows = StoreRows.of(str(small), f.layout, f.schema, "another-model")
    default = 1 if store.url.startswith("sqlite") else max(2, min(4, os.cpu_count() or 1))
    assert writers_for(store, None, 12) == default
    assert writers_for(store, 8, 3) == 3  # never more than one per part
    with pytest.raises(InputError, match="mixes model versions"):
        load_parts(store, plan(small), rows, 2, 3000, ttl_s=None, profile={}, meta={},  # type: ignore[arg-type]
                   activate=True)
    assert [(v.version, v.state, v.active) for v in store.versions()] == [("1", READY, True)]


def test_the_gates_see_every_row_once_before_the_store_is_touched(small: Path, tmp_path: Path,
                                                                  store: PredictionStore) -> None:
    folder = tmp_path / "preds"
    folder.mkdir()
    manifest = dataset.read_manifest(small)
    names = [p.name for p in manifest.parts]
    for name in names:
        (folder / name).write_bytes((small / name).read_bytes())
    (folder / "part-99999.parquet").write_bytes((small / names[0]).read_bytes())  # its keys again
    dataset.commit(folder, [*names, "part-99999.parquet"], manifest.fingerprint)
    with pytest.raises(VerificationFailed, match="keys") as failed:
        publish_predictions(folder, store, Checks(), writers=3)
    report: Report = failed.value.report  # type: ignore[assignment]
    assert report.profile.row_count == 3000 + manifest.parts[0].rows
    assert store.versions() == []
    assert publish_predictions(small, store, Checks(), writers=3).version.version == "1"  # none was begun


def test_writers_are_checked(small: Path) -> None:
    memory = open_store("memory://")
    assert writers_for(memory, None, 12) == 1
    with pytest.raises(InputError, match="lives in one process"):
        publish_predictions(small, memory, Checks(), writers=2)
    with pytest.raises(InputError, match="whole number"):
        writers_for(memory, 0, 12)
    assert not memory.versions()


# -- kills ---------------------------------------------------------------------------------------------


def start_publish(folder: Path, url: str, writers: int = 2) -> subprocess.Popen[str]:
    """`augury publish` in a process of its own (the large dataset after the small one: no row-change
    gate)."""
    checks = folder.parent / "checks.toml"
    checks.write_text("max_row_change = inf\n")
    env = {**os.environ, "PYTHONPATH": str(FIXTURES)}
    return subprocess.Popen([sys.executable, "-m", "augury.cli", "publish", str(folder), "--store", url,
                             "--writers", str(writers), "--checks", str(checks)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def hold_writes(proc: subprocess.Popen[str], url: str, loading: Callable[[], bool]) -> Callable[[], None]:
    """Once the publish `proc` has begun (`loading`), stop every write to the store (SQLite: an open
    write transaction; Redis: CLIENT PAUSE WRITE); returns what lets them go."""
    deadline = time.monotonic() + 60
    while not loading():
        if proc.poll() is not None:
            pytest.fail(f"the publish ended before it began loading: {proc.communicate()}")
        assert time.monotonic() < deadline, "the publish never began"
        time.sleep(0.001)
    if url.startswith("sqlite"):
        con = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        con.execute("BEGIN IMMEDIATE")

        def release_sqlite() -> None:
            con.execute("ROLLBACK")
            con.close()
        return release_sqlite
    client = redis.Redis.from_url(url)
    client.client_pause(30_000, all=False)  # (writes only: reads go on)

    def release_redis() -> None:
        client.client_unpause()
        client.close()
    return release_redis


def loading_check(url: str, version: str) -> Callable[[], bool]:
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")

        def sqlite_loading() -> bool:
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                return bool(con.execute("SELECT 1 FROM augury_versions WHERE id = ?", (int(version),))
                            .fetchone())
            finally:
                con.close()
        return sqlite_loading
    client = redis.Redis.from_url(url)
    return lambda: bool(client.exists(f"augury:meta:{version}"))


def midway(store: PredictionStore) -> bool:
    """Whether version 2 is being loaded and holds fewer rows than the large dataset."""
    loading = [v for v in store.versions() if v.version == "2"]
    return bool(loading) and loading[0].row_count < COPIES * 3000


def writer_processes(driver: subprocess.Popen[str], count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 30
    while True:
        found = [p for p in psutil.Process(driver.pid).children()
                 if p.cmdline() == psutil.Process(driver.pid).cmdline()]
        if len(found) == count:
            return found
        assert time.monotonic() < deadline, f"{len(found)} writer processes, not {count}"
        time.sleep(0.01)


def test_a_writer_killed_midway_aborts_and_keeps_the_active_version(large: Path, small: Path, url: str,
                                                                    store: PredictionStore) -> None:
    publish_predictions(small, store, Checks(), writers=1)
    sample = all_keys(small)[::97]
    before = store.get_many(sample)
    proc = start_publish(large, url)
    release = hold_writes(proc, url, loading_check(url, "2"))
    try:
        assert midway(store)
        victim = writer_processes(proc, 2)[0]
        victim.send_signal(signal.SIGKILL)
    finally:
        release()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "died (killed by SIGKILL)" in err and "nothing was published" in err
    assert [(v.version, v.state, v.active) for v in store.versions()] == [("1", READY, True)]
    assert store.get_many(sample) == before
    if url.startswith("redis"):
        client = redis.Redis.from_url(url)
        assert not list(client.scan_iter(match="augury:v:2:*", count=1000))
        client.close()


def test_the_driver_killed_midway_leaves_an_orphan_that_gc_removes(large: Path, small: Path, url: str,
                                                                   store: PredictionStore) -> None:
    publish_predictions(small, store, Checks(), writers=1)
    sample = all_keys(small)[::97]
    before = store.get_many(sample)
    proc = start_publish(large, url + ("?lease_s=1" if url.startswith("redis") else ""))
    release = hold_writes(proc, url, loading_check(url, "2"))
    try:
        assert midway(store)
        writers = writer_processes(proc, 2)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        _, alive = psutil.wait_procs(writers, timeout=10)
        assert not alive, "the writers outlived their driver"
    finally:
        release()
    deadline = time.monotonic() + 10
    while [v.state for v in store.versions()] != [READY, ORPHAN]:  # (Redis: once its lease expired)
        assert time.monotonic() < deadline, store.versions()
        time.sleep(0.05)
    assert store.get_many(sample) == before
    assert store.gc(keep=5) == ["2"]
    assert [(v.version, v.active) for v in store.versions()] == [("1", True)]
    assert publish_predictions(small, store, Checks(), writers=1).version.version == "3"


def test_a_dataset_without_its_manifest_is_refused(small: Path, tmp_path: Path) -> None:
    folder = tmp_path / "preds"
    folder.mkdir()
    for part in small.glob("part-*.parquet"):
        (folder / part.name).write_bytes(part.read_bytes())
    proc = start_publish(folder, f"sqlite:///{tmp_path / 'new.db'}")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "no _manifest.json" in err and "Traceback" not in err
    assert not (tmp_path / "new.db").exists()


def test_the_start_method_forks_only_a_process_that_may_fork() -> None:
    from augury.children import start_method

    assert start_method(False) == "spawn"
    assert start_method(True) in ("fork", "spawn")  # ("spawn" when another thread runs here)
