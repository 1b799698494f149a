"""The SQLite read path's snapshots: read-your-writes in one store object, bounded staleness across
objects and processes, one version per lookup, and the janitor (idle snapshots end, the WAL is copied
back, the thread stops with `close` and when idle)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from augury.errors import ConfigError, StoreError
from augury.store import SQLiteStore, open_store
from augury.store.sqlite import DEFAULT_SNAPSHOT_S
from augury.store.sqlite_pool import JANITOR_LINGER_S
from augury.store.sqlite_read import CHUNK

BatchOf = Callable[..., pa.RecordBatch]
SeenWithin = Callable[[float, Callable[[], bool]], float]

#: long enough that a test relying on a snapshot's renewal by age would time out instead of passing.
FOREVER_S = 3600.0


def janitor(store: SQLiteStore) -> threading.Thread | None:
    """The store's janitor thread, if it runs (checked against threading.enumerate())."""
    running = [t for t in threading.enumerate() if t is store._pool._janitor]
    return running[0] if running else None


def model_version(store: SQLiteStore, key: str = "a") -> str | None:
    hit = store.get_many([key])[0]
    return None if hit is None else hit.model_version


def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def versioned(keys: list[str], v: int, batch_of: BatchOf) -> list[pa.RecordBatch]:
    """`keys` with score = v * 1e6 + position, so a value tells the version it came from."""
    return [batch_of(keys, score=pa.array([v * 1e6 + i for i in range(len(keys))]))]


@pytest.fixture()
def held(sqlite_path: Path) -> Iterator[SQLiteStore]:
    """A store whose snapshots never age out: only its own writes (or a version listing) renew them."""
    s = SQLiteStore(sqlite_path, snapshot_s=FOREVER_S)
    yield s
    s.close()


def test_own_writes_are_read_at_once(held: SQLiteStore, batch_of: BatchOf) -> None:
    keys = ["a"] + [f"k{i}" for i in range(3 * CHUNK)]
    for v in (1, 2, 3):
        held.publish(versioned(keys, v, batch_of), model_version=f"m{v}", activate=v < 3)
        assert model_version(held) == ("m2" if v == 3 else f"m{v}")
    hits = held.get_many(keys)
    assert {h.model_version for h in hits if h} == {"m2"} and None not in hits
    held.activate("3")
    assert model_version(held) == "m3"
    assert {h.store_version for h in held.get_many(keys) if h} == {"3"}  # several chunks, one snapshot
    held.rollback()
    assert model_version(held) == "m2"
    held.delete("3")
    held.publish(versioned(keys, 4, batch_of), model_version="m4")
    assert model_version(held) == "m4"
    assert held.gc(keep=0) == ["1", "2"]
    assert model_version(held) == "m4"
    held.publish([batch_of(["other"])], model_version="m5")
    assert model_version(held) is None and model_version(held, "other") == "m5"


def test_own_writes_are_read_at_once_from_another_thread(held: SQLiteStore, batch_of: BatchOf) -> None:
    held.publish([batch_of(["a"])], model_version="m1")
    assert model_version(held) == "m1"  # the one reader now holds a snapshot
    thread = threading.Thread(target=held.publish, args=([batch_of(["a"])],), kwargs={"model_version": "m2"})
    thread.start()
    thread.join(10)
    assert model_version(held) == "m2"


def test_a_snapshot_hides_another_process_until_renewed(
    sqlite_path: Path, held: SQLiteStore, batch_of: BatchOf
) -> None:
    """Proof that lookups do run inside a held snapshot, and that version listings do not."""
    other = SQLiteStore(sqlite_path, snapshot_s=0)
    other.publish([batch_of(["a"])], model_version="m1")
    assert model_version(held) == "m1"
    other.publish([batch_of(["a"])], model_version="m2")
    assert model_version(held) == "m1"  # the snapshot predates it, and never ages out here
    assert model_version(other) == "m2"
    active = held.active()
    assert active is not None and active.model_version == "m2"  # listings read the latest state
    assert [v.active for v in held.versions()] == [False, True]
    assert model_version(held) == "m2"  # (the listing ended that reader's snapshot)
    other.close()


def test_no_reader_goes_back_to_a_version_another_reader_has_served(
    sqlite_path: Path, held: SQLiteStore, batch_of: BatchOf
) -> None:
    """Two readers of one pool, one holding a snapshot of version 1 when the other (new) begins one of
    version 2: after a lookup answered from version 2, no lookup answers from version 1."""
    other = SQLiteStore(sqlite_path, snapshot_s=0)
    other.publish([batch_of(["a"])], model_version="m1")
    assert model_version(held) == "m1"  # reader A: a snapshot of version 1 (never aging out here)
    other.publish([batch_of(["a"])], model_version="m2")
    pool = held._pool
    first, second = pool.acquire(), pool.acquire()  # A, and a new reader B (as two threads would)
    pool.release(second)
    pool.release(first)  # the pool lends B next, then A
    assert model_version(held) == "m2"  # B's first snapshot sees version 2
    assert [model_version(held) for _ in range(4)] == ["m2"] * 4  # A and B in turn
    other.close()


def test_another_object_sees_an_activation_within_snapshot_s(
    sqlite_path: Path, batch_of: BatchOf, seen_within: SeenWithin
) -> None:
    snapshot_s = 0.2
    reader, writer = SQLiteStore(sqlite_path, snapshot_s=snapshot_s), SQLiteStore(sqlite_path)
    writer.publish([batch_of(["a"])], model_version="m1")
    writer.publish([batch_of(["a"])], model_version="m2", activate=False)
    assert model_version(reader) == "m1"
    writer.activate("2")
    waited = seen_within(snapshot_s, lambda: model_version(reader) == "m2")
    assert waited <= snapshot_s + 0.5
    reader.close()
    writer.close()


def test_the_cli_activates_while_a_store_reads(
    sqlite_path: Path, batch_of: BatchOf, seen_within: SeenWithin
) -> None:
    reader = SQLiteStore(sqlite_path)  # the default snapshot_s
    reader.publish([batch_of(["a"])], model_version="m1")
    reader.publish([batch_of(["a"])], model_version="m2", activate=False)
    stop = threading.Event()
    seen: list[str | None] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(model_version(reader))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "augury.cli", "store", "activate", "2", "--store", f"sqlite:///{sqlite_path}"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        seen_within(DEFAULT_SNAPSHOT_S, lambda: seen[-1] == "m2")
    finally:
        stop.set()
        thread.join(10)
    assert set(seen) == {"m1", "m2"}
    first = seen.index("m2")
    assert seen[first:] == ["m2"] * (len(seen) - first)  # one reader: never back to the old version
    reader.close()


def test_a_lookup_never_mixes_versions_across_processes(sqlite_path: Path, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(3 * CHUNK)]
    sample = keys[::2]  # more than one chunk
    writer, reader = SQLiteStore(sqlite_path), SQLiteStore(sqlite_path, snapshot_s=0.005, max_readers=2)
    writer.publish(versioned(keys, 1, batch_of), model_version="m1")
    stop = threading.Event()
    problems: list[str] = []
    seen: set[str] = set()

    def read() -> None:
        while not stop.is_set():
            got = reader.get_many(sample)
            versions = {r.store_version if r else None for r in got}
            if len(versions) != 1 or None in versions:
                problems.append(f"mixed or missing: {versions}")
                return
            (v,) = versions
            seen.add(str(v))
            want = [int(v) * 1e6 + keys.index(k) for k in sample]
            if [r.values["score"] for r in got if r] != want:
                problems.append(f"values are not version {v}'s")
                return

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for v in range(2, 6):
            writer.publish(versioned(keys, v, batch_of), model_version=f"m{v}")
            time.sleep(0.02)
        writer.rollback()
        writer.delete("5")
        time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not problems, problems
    assert len(seen) >= 2, seen
    reader.close()
    writer.close()


def test_an_idle_reader_ends_its_snapshot_and_the_wal_can_restart(
    sqlite_path: Path, batch_of: BatchOf
) -> None:
    store = SQLiteStore(sqlite_path, snapshot_s=0.05)
    store.publish([batch_of(["a"])], model_version="m1")
    assert model_version(store) == "m1"
    (reader,) = store._pool._all
    assert reader.con.in_transaction  # a snapshot held between lookups
    other = SQLiteStore(sqlite_path, snapshot_s=0)
    other.publish([batch_of([f"k{i}" for i in range(50_000)])], model_version="big", activate=False)
    wait_for(lambda: not reader.con.in_transaction)  # ended by the janitor, with nobody looking up
    con = sqlite3.connect(sqlite_path, timeout=0)
    # no reader in the way; "busy" only while the janitor's own checkpoint of the publish is running
    wait_for(lambda: con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone() == (0, 0, 0))
    con.close()
    assert (sqlite_path.parent / (sqlite_path.name + "-wal")).stat().st_size == 0
    assert model_version(store) == "m1" and model_version(store, "k0") is None
    store.activate("2")
    assert model_version(store, "k0") == "big"
    other.close()
    store.close()


def _wal_index(path: Path) -> tuple[int, int]:
    """(mxFrame, nBackfill) from the WAL index (the -shm file; https://www.sqlite.org/walformat.html):
    the last valid frame of the WAL, and how many frames have been copied back into the database."""
    data = (path.parent / (path.name + "-shm")).read_bytes()[:100]
    return struct.unpack_from("=I", data, 16)[0], struct.unpack_from("=I", data, 96)[0]


def test_the_janitor_copies_a_publish_back_while_snapshots_are_held(
    sqlite_path: Path, batch_of: BatchOf
) -> None:
    """A publish's own checkpoint stops at the snapshot a busy reader holds; the janitor finishes it."""
    store = SQLiteStore(sqlite_path, snapshot_s=0.3)
    store.publish([batch_of(["a"])], model_version="m1")
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            store.get_many(["a"])

    thread = threading.Thread(target=read)
    thread.start()
    try:
        other = SQLiteStore(sqlite_path, snapshot_s=0)
        other.publish([batch_of([f"k{i}" for i in range(50_000)])], model_version="big", activate=False)
        wait_for(lambda: _wal_index(sqlite_path)[0] == _wal_index(sqlite_path)[1] > 0)
    finally:
        stop.set()
        thread.join(10)
    other.close()
    store.close()


def test_close_stops_the_janitor(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path)
    store.publish([batch_of(["a"])], model_version="m1")
    assert janitor(store) is None  # started by the first snapshot, not before
    assert model_version(store) == "m1"
    thread = janitor(store)
    assert thread is not None and thread.daemon
    store.close()
    assert not thread.is_alive() and thread not in threading.enumerate()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_many(["a"])
    assert janitor(store) is None and not thread.is_alive()


def test_the_janitor_stops_when_idle_and_comes_back(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path, snapshot_s=0.02)
    store.publish([batch_of(["a"])], model_version="m1")
    assert model_version(store) == "m1"
    first = janitor(store)
    assert first is not None
    wait_for(lambda: not first.is_alive(), timeout_s=JANITOR_LINGER_S + 10)
    assert janitor(store) is None and not store._pool._all[0].con.in_transaction
    assert model_version(store) == "m1"
    second = janitor(store)
    assert second is not None and second is not first
    store.close()
    assert not second.is_alive()


def _child() -> None:
    """A forked worker's work: nothing to do with the parent's store."""
    assert sum(range(10)) == 45


def test_a_fork_while_the_janitor_runs(sqlite_path: Path, batch_of: BatchOf) -> None:
    store = SQLiteStore(sqlite_path, snapshot_s=0.01)
    store.publish([batch_of(["a"])], model_version="m1")
    assert model_version(store) == "m1"
    thread = janitor(store)
    assert thread is not None
    for _ in range(5):
        child = multiprocessing.get_context("fork").Process(target=_child)
        child.start()
        child.join(30)
        assert child.exitcode == 0
    assert model_version(store) == "m1"
    store.publish([batch_of(["a"])], model_version="m2")
    assert model_version(store) == "m2"
    store.close()
    assert not thread.is_alive()


def test_without_snapshots_there_is_no_transaction_and_no_janitor(
    sqlite_path: Path, batch_of: BatchOf
) -> None:
    store = SQLiteStore(sqlite_path, snapshot_s=0)
    store.publish([batch_of(["a"])], model_version="m1")
    assert model_version(store) == "m1" and store.get_many([f"k{i}" for i in range(3 * CHUNK)])[0] is None
    assert not store._pool._all[0].con.in_transaction and store._pool._janitor is None
    store.close()


def test_a_reader_that_failed_inside_a_snapshot_is_not_lent_again(
    sqlite_path: Path, batch_of: BatchOf
) -> None:
    store = SQLiteStore(sqlite_path, snapshot_s=FOREVER_S)
    store.publish([batch_of(["a", "b"])], model_version="m")
    con = sqlite3.connect(sqlite_path, isolation_level=None)
    con.execute("UPDATE preds_1 SET v = x'c1ff00' WHERE key = 'a'")  # tamper with an immutable version
    con.close()
    with pytest.raises(StoreError, match="corrupt record for key 'a'"):
        store.get_many(["a"])  # the lookup that begins the snapshot
    assert store._pool._all == []  # discarded, snapshot and all
    assert model_version(store, "b") == "m"
    store.close()


@pytest.mark.parametrize("value", [-1, -0.5, float("nan"), float("inf"), True])
def test_a_bad_snapshot_s_is_a_config_error(sqlite_path: Path, value: float) -> None:
    with pytest.raises(ConfigError, match="snapshot_s"):
        SQLiteStore(sqlite_path, snapshot_s=value)


def test_snapshot_s_as_a_url_option(sqlite_path: Path) -> None:
    for value, expected in ((0, 0.0), ("0.2", 0.2), (1, 1.0)):
        store = open_store(f"sqlite:///{sqlite_path}", snapshot_s=value)
        assert isinstance(store, SQLiteStore) and store._pool._snapshot_s == expected
        store.close()
