"""SQLite-specific behaviour: crash safety, cross-connection switches, the file format, bounds, errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from augury.errors import StoreError
from augury.store import LOADING, ORPHAN, READY, SQLiteStore, open_store
from augury.store.lease import Lease, lease_path
from augury.store.sqlite import DEFAULT_SNAPSHOT_S

BatchOf = Callable[..., pa.RecordBatch]
SeenWithin = Callable[[float, Callable[[], bool]], float]

SLOW_PUBLISH = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    from augury.store import SQLiteStore

    def batches():
        for i in range(10_000):
            keys = [f"slow-{i}-{j}" for j in range(2_000)]
            yield pa.record_batch({"key": keys, "computed_at": pa.array([time.time()] * len(keys)),
                                   "score": [-1.0] * len(keys)})
            if i == 3:
                print("loading", flush=True)
            time.sleep(0.01)

    SQLiteStore(sys.argv[1]).publish(batches(), model_version="slow")
    print("finished", flush=True)
""")


#: a publish killed after it activated its version, before it removed its lease: the real steps, then exit.
CRASH_AFTER_ACTIVATION = textwrap.dedent("""
    import os, sys, time
    import pyarrow as pa
    from augury.store import sqlite_publish
    from augury.store.sqlite_schema import connect

    path = sys.argv[1]
    con = connect(path, 30.0)
    batch = pa.record_batch({"key": ["late"], "computed_at": pa.array([time.time()]), "score": [1.0]})
    number, lease = sqlite_publish.register(con, path, "crashed", ("score",), None, "{}", "{}")
    sqlite_publish.load(con, number, batch, iter(()), ("score",), "crashed", True)
    print(number, flush=True)
    os._exit(0)  # gone without releasing the lease
""")


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_kill_9_mid_publish_leaves_the_active_version_intact(sqlite_path: Path, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(5_000)]
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(keys)], model_version="good")
    before = store.get_many(keys)

    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_PUBLISH, str(sqlite_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()
        assert line == "loading", proc.stderr.read() if proc.poll() is not None else line
        assert {v.version: v.state for v in store.versions()} == {"1": READY, "2": LOADING}
        assert os.path.exists(lease_path(str(sqlite_path), 2))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    after = store.get_many(keys)
    assert after == before and all(r is not None and r.model_version == "good" for r in after)
    states = [(v.version, v.state, v.active) for v in store.versions()]
    assert states == [("1", READY, True), ("2", ORPHAN, False)]
    assert store.gc(keep=5) == ["2"]
    assert [v.version for v in store.versions()] == ["1"]
    assert not os.path.exists(lease_path(str(sqlite_path), 2))
    with sqlite3.connect(sqlite_path) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    assert "preds_2" not in tables and "preds_1" in tables
    assert store.publish([batch_of(["x"])], model_version="next").version == "3"
    store.close()


def test_gc_removes_the_lease_of_a_publish_killed_after_activation(sqlite_path: Path,
                                                                   batch_of: BatchOf) -> None:
    """Its version is ready and active, so no orphan points at its lease; gc removes it all the same (and
    `remove_dead_leases` says how many), never the lease of a live publish."""
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(["x"])], model_version="good")
    proc = run(CRASH_AFTER_ACTIVATION, str(sqlite_path))
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr
    dead = lease_path(str(sqlite_path), 2)
    assert os.path.exists(dead)
    states = [(v.version, v.state, v.active) for v in store.versions()]
    assert states == [("1", READY, False), ("2", READY, True)]
    live = Lease(lease_path(str(sqlite_path), 99))  # a publish still running (this process holds it)
    try:
        assert store.gc(keep=5) == []
        assert not os.path.exists(dead) and os.path.exists(live.path)
        assert run(CRASH_AFTER_ACTIVATION, str(sqlite_path)).stdout.strip() == "3"
        assert os.path.exists(lease_path(str(sqlite_path), 3))
        assert store.remove_dead_leases() == 1 and store.remove_dead_leases() == 0
        assert not os.path.exists(lease_path(str(sqlite_path), 3)) and os.path.exists(live.path)
    finally:
        live.release()
    assert store.get_many(["late"])[0] is not None  # the crashed publish's version itself is whole
    store.close()


@pytest.mark.parametrize("snapshot_s", [0.0, DEFAULT_SNAPSHOT_S], ids=["no-snapshots", "snapshots"])
def test_another_connection_and_process_see_a_switch_without_reopening(
    sqlite_path: Path, batch_of: BatchOf, seen_within: SeenWithin, snapshot_s: float
) -> None:
    """At once without read snapshots; within snapshot_s with them."""
    writer, reader = SQLiteStore(sqlite_path), SQLiteStore(sqlite_path, snapshot_s=snapshot_s)

    def model_versions() -> list[str]:
        return [r.model_version for r in reader.get_many(["a"]) if r]

    writer.publish([batch_of(["a"])], model_version="m1")
    assert model_versions() == ["m1"]
    writer.publish([batch_of(["a"])], model_version="m2")
    seen_within(snapshot_s, lambda: model_versions() == ["m2"])
    done = run(
        "import sys; from augury.store import SQLiteStore; SQLiteStore(sys.argv[1]).rollback()",
        str(sqlite_path),
    )
    assert done.returncode == 0, done.stderr
    seen_within(snapshot_s, lambda: model_versions() == ["m1"])
    assert [r.store_version for r in writer.get_many(["a", "a"]) if r] == ["1", "1"]
    reader.close()
    writer.close()


def test_file_layout(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = open_store(f"sqlite:///{sqlite_path}")
    store.publish([batch_of(["a"])], model_version="m")
    store.publish([batch_of(["a"])], model_version="m")
    store.gc(keep=1)
    store.close()
    con = sqlite3.connect(sqlite_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"augury_store", "augury_versions", "augury_pointer", "preds_2"} <= tables
    assert "preds_1" not in tables
    assert con.execute("SELECT active FROM augury_pointer").fetchall() == [(2,)]
    con.close()


def test_reopening_keeps_everything(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path)
    first = store.publish([batch_of(["a"])], model_version="m", ttl_s=10.0, meta={"k": [1, 2]})
    store.close()
    store.close()  # idempotent
    again = SQLiteStore(sqlite_path)
    assert again.versions() == [first]
    assert [r.key for r in again.get_many(["a"]) if r] == ["a"]
    again.close()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello, I am a text file, not a database at all. " * 100, "not an SQLite database"),
        (b"SQLite format 3\x00" + b"\xff" * 4000, "not an augury prediction store|cannot open"),
    ],
)
def test_a_non_store_file_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=message):
        SQLiteStore(path)


def test_a_foreign_sqlite_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="SQLite database but not an augury prediction store"):
        SQLiteStore(path)


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "store.db")


def test_reader_connections_are_bounded(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path, max_readers=1, pool_timeout_s=0.2)
    store.publish([batch_of(["a"])], model_version="m")
    held = store._pool.acquire()  # every reader connection busy
    try:
        with pytest.raises(StoreError, match=r"1 reader connections .* busy"):
            store.get_many(["a"])
    finally:
        store._pool.release(held)
    assert store.get_many(["a"])[0] is not None
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_many(["a"])


def test_many_threads_share_a_bounded_pool(sqlite_path: Path, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(500)]
    store = SQLiteStore(sqlite_path, max_readers=3)
    store.publish([batch_of(keys)], model_version="m")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(200):
                assert store.get_many([keys[i], keys[-i]])[0] is not None
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(store._pool._all) <= 3
    store.close()


def test_sqlite_errors_become_store_errors(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path, busy_timeout_s=0.1)
    store.publish([batch_of(["a"])], model_version="m")
    blocker = sqlite3.connect(sqlite_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    try:
        with pytest.raises(StoreError, match="database is locked") as info:
            store.publish([batch_of(["b"])], model_version="m")
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(StoreError):
            store.activate("1")
        assert store.get_many(["a"])[0] is not None  # readers are not blocked by a writer
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.publish([batch_of(["b"])], model_version="m").version == "2"
    store.close()


@pytest.mark.parametrize("snapshot_s", [0.0, DEFAULT_SNAPSHOT_S], ids=["no-snapshots", "snapshots"])
def test_a_dropped_version_mid_read_is_retried(
    sqlite_path: Path, batch_of: BatchOf, seen_within: SeenWithin, snapshot_s: float
) -> None:
    """Without snapshots the lookup notices the dropped table and retries; inside a snapshot the dropped
    version is still readable, and the new one is seen within snapshot_s."""
    reader, writer = SQLiteStore(sqlite_path, snapshot_s=snapshot_s), SQLiteStore(sqlite_path)
    writer.publish([batch_of(["a"])], model_version="m1")
    assert reader.get_many(["a"])[0] is not None  # reader caches version 1
    writer.publish([batch_of(["a"])], model_version="m2")
    writer.delete("1")

    def sees_m2() -> bool:
        got = reader.get_many(["a", "b"])
        assert got[0] is not None and got[0].model_version in ("m1", "m2") and got[1] is None
        return got[0].model_version == "m2"

    seen_within(snapshot_s, sees_m2)
    reader.close()
    writer.close()


def test_a_slow_publish_does_not_block_readers(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(["a"])], model_version="m1")
    gate = threading.Event()

    def slow() -> Iterator[pa.RecordBatch]:
        yield batch_of(["a"])
        gate.wait(10)

    thread = threading.Thread(target=store.publish, args=(slow(),), kwargs={"model_version": "m2"})
    thread.start()
    try:
        time.sleep(0.05)
        start = time.perf_counter()
        assert [r.model_version for r in store.get_many(["a"]) if r] == ["m1"]
        assert time.perf_counter() - start < 1.0
    finally:
        gate.set()
        thread.join(10)
    assert [r.model_version for r in store.get_many(["a"]) if r] == ["m2"]
    store.close()


def test_a_corrupt_store_is_a_store_error(sqlite_path: Path, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(20_000)]
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(keys)], model_version="m")
    store.close()
    data = bytearray(sqlite_path.read_bytes())
    for offset in range(8192, len(data), 4096):  # scribble over every page but the first
        data[offset : offset + 100] = b"\xab" * 100
    sqlite_path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="malformed"):
        damaged = SQLiteStore(sqlite_path)
        damaged.versions()
        damaged.get_many(keys[:300])


def test_a_corrupt_record_is_a_store_error_not_a_wrong_answer(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(["a", "b"])], model_version="m")
    con = sqlite3.connect(sqlite_path, isolation_level=None)
    con.execute("UPDATE preds_1 SET v = x'c1ff00' WHERE key = 'a'")  # tamper with an immutable version
    con.close()
    with pytest.raises(StoreError, match="corrupt record for key 'a'"):
        store.get_many(["b", "a"])
    assert [r.key for r in store.get_many(["b"]) if r] == ["b"]  # the pool recovered
    store.close()


def _one(score: float) -> pa.RecordBatch:
    return pa.record_batch({"key": ["a"], "computed_at": pa.array([time.time()]), "score": [score]})


def test_lookup_view_follows_lookups_and_reads_stamp_marks_switches_made_here(tmp_path: Path) -> None:
    """What a server that keeps lookups' answers relies on (`serve.lookup_memo`): `lookup_view` is the
    version lookups answer from (another process's switch seen within `snapshot_s`, as by lookups), and
    `reads_stamp` changes with every write or switch through this store object."""
    store = SQLiteStore(tmp_path / "s.db", snapshot_s=0.2)
    other = SQLiteStore(tmp_path / "s.db")
    try:
        assert store.lookup_view() is None
        first = store.publish([_one(1.0)], model_version="m").version
        view = store.lookup_view()
        assert view is not None and view.store_version == first and view.ttl_s is None
        stamp = store.reads_stamp()
        assert store.reads_stamp() == stamp  # (nothing happened)
        second = other.publish([_one(2.0)], model_version="m", ttl_s=60).version
        assert store.reads_stamp() == stamp  # another process's switch: seen by asking, within snapshot_s
        deadline = time.monotonic() + 5
        while (view := store.lookup_view()) is None or view.store_version != second:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert view.ttl_s == 60
        stamp = store.reads_stamp()
        third = store.publish([_one(3.0)], model_version="m").version  # through this object: the stamp moves
        assert store.reads_stamp() != stamp
        found = store.lookup_view()
        assert found is not None and found.store_version == third
        assert store.get_many(["a"])[0].values == {"score": 3.0}  # type: ignore[union-attr]
    finally:
        store.close()
        other.close()
