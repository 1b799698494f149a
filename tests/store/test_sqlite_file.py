"""A store file that changes under an open `SQLiteStore` (issue 11): rewritten in place, truncated,
replaced, deleted and published again. Real files, real SQLite; `watch` is what the reader janitor
calls once a second, called here directly so that each step is known to have happened."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from augury.errors import StoreError
from augury.store import SQLiteStore
from augury.store.sqlite_watch import WATCH_S, Stamps, continues

KEYS = [f"k{i}" for i in range(2_000)]


def publish(store: SQLiteStore, offset: float) -> str:
    """A new active version: `score` = offset + the key's number."""
    batch = pa.record_batch({"key": pa.array(KEYS), "computed_at": pa.array([time.time()] * len(KEYS)),
                             "score": pa.array([offset + i for i in range(len(KEYS))], pa.float64())})
    return store.publish([batch], model_version=f"m{offset:g}").version


def build(path: Path, *offsets: float) -> None:
    """A closed store file at `path` whose versions are `offsets`, the last one active."""
    store = SQLiteStore(path)
    for offset in offsets:
        publish(store, offset)
    store.close()


def soon(store: SQLiteStore, keys: list[str], expected: tuple[str, list[float]], timeout_s: float) -> None:
    """Wait until `scores` is `expected` (read snapshots and the recovery thread take a while)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if scores(store, keys) == expected:
                return
        except StoreError:
            pass
        assert time.monotonic() < deadline, f"{keys} never read {expected}"
        time.sleep(0.02)


def scores(store: SQLiteStore, keys: list[str]) -> tuple[str, list[float]]:
    found = store.get_many(keys)
    assert all(p is not None for p in found)
    (version,) = {p.store_version for p in found if p is not None}
    return version, [p.values["score"] for p in found if p is not None]


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """live.db (version 1: 100 + i), a copy of it, and other.db (versions 1, 2; 2 active: 2000 + i)."""
    live, saved, other = tmp_path / "live.db", tmp_path / "saved.db", tmp_path / "other.db"
    build(live, 100)
    shutil.copyfile(live, saved)
    build(other, -1, 2000)
    return live, saved, other


def test_a_copy_over_the_file_is_reopened(files: tuple[Path, Path, Path]) -> None:
    live, _, other = files
    store = SQLiteStore(live, create=False)
    try:
        assert scores(store, ["k1", "k7"]) == ("1", [101.0, 107.0])
        shutil.copyfile(other, live)  # cp other.db live.db: the same inode, other bytes
        store.watch()
        assert scores(store, ["k1", "k7"]) == ("2", [2001.0, 2007.0])
        assert [v.version for v in store.versions()] == ["1", "2"]
    finally:
        store.close()


def test_a_truncated_file_is_an_error_until_a_store_is_back(files: tuple[Path, Path, Path]) -> None:
    live, saved, _ = files
    store = SQLiteStore(live, create=False)
    try:
        assert scores(store, ["k3"]) == ("1", [103.0])
        os.truncate(live, 0)
        with pytest.raises(StoreError):
            store.get_many(["k4"])  # read inside the open snapshot: an error, not SIGBUS
        store.watch()
        for call in (lambda: store.get_many(["k3"]), store.active, lambda: publish(store, 5)):
            with pytest.raises(StoreError, match=r"empty|no store"):
                call()
        shutil.copyfile(saved, live)
        soon(store, ["k3"], ("1", [103.0]), 5 * WATCH_S)  # found by the recovery thread (every WATCH_S)
    finally:
        store.close()


def test_a_file_moved_over_the_store_is_reopened_and_the_old_wal_removed(
        files: tuple[Path, Path, Path]) -> None:
    live, _, other = files
    store = SQLiteStore(live, create=False)
    try:
        assert scores(store, ["k2"]) == ("1", [102.0])
        assert os.path.exists(f"{live}-wal")
        os.replace(other, live)  # mv other.db live.db
        store.watch()
        assert scores(store, ["k2"]) == ("2", [2002.0])
        # (the old file's WAL went with it: read as part of the new file, it would mix the two)
    finally:
        store.close()


def test_a_deleted_store_published_again_is_reopened_and_the_publishers_wal_kept(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    build(live, 100)
    store = SQLiteStore(live, create=False)
    try:
        assert scores(store, ["k5"]) == ("1", [105.0])
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{live}{suffix}")
        store.watch()
        with pytest.raises(StoreError, match="no store"):
            store.get_many(["k5"])
        publisher = SQLiteStore(live)  # published again, the publisher still open (its WAL in use)
        try:
            assert publish(publisher, -7) == "1" and publish(publisher, 3000) == "2"
            soon(store, ["k5"], ("2", [3005.0]), 5 * WATCH_S)
            store.watch()
            assert publish(publisher, 4000) == "3"  # the publisher's WAL is still its own
            assert scores(publisher, ["k5"]) == ("3", [4005.0])
        finally:
            publisher.close()
        soon(store, ["k5"], ("3", [4005.0]), 1.0)
    finally:
        store.close()


def test_writes_through_the_store_or_another_process_reopen_nothing(
        files: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    live, _, _ = files
    store = SQLiteStore(live, create=False)
    other_process = SQLiteStore(live, create=False)
    try:
        with caplog.at_level(logging.INFO, logger="augury.store"):
            for offset in (200, 300):
                publish(store, offset)
                store.get_many(["k1"])
                time.sleep(0.02)  # a new mtime
                store.watch()
            publish(other_process, 400)
            other_process.activate("1")
            other_process.close()  # (its close checkpoints into the file)
            store.watch()
        assert not [r for r in caplog.records if "reopen" in r.getMessage()]
        soon(store, ["k1"], ("1", [101.0]), 1.0)
    finally:
        other_process.close()
        store.close()


@pytest.mark.parametrize(("known", "now", "same"), [
    (Stamps("a", {1: 1.0}), Stamps("a", {1: 1.0, 2: 2.0}), True),  # a publish
    (Stamps("a", {1: 1.0, 2: 2.0}), Stamps("a", {2: 2.0}), True),  # gc
    (Stamps("a", {}), Stamps("a", {1: 1.0}), True),  # the first publish
    (Stamps("a", {1: 1.0}), Stamps("b", {1: 1.0}), False),  # another store
    (Stamps("a", {1: 1.0}), Stamps(None, {1: 1.0}), False),
    (Stamps(None, {1: 1.0}), Stamps(None, {1: 1.5}), False),  # another store without ids
    (Stamps(None, {1: 1.0, 2: 2.0}), Stamps(None, {3: 3.0}), False),  # (ambiguous: reopened)
    (Stamps("a", {1: 1.0, 3: 3.0}), Stamps("a", {1: 1.0, 2: 2.0, 3: 3.0}), False),  # numbers never reused
])
def test_continues(known: Stamps, now: Stamps, same: bool) -> None:
    assert continues(known, now) is same


CRASH = """
import os, sys
from augury.errors import StoreError
from augury.store import SQLiteStore
store = SQLiteStore(sys.argv[1], create=False)
store.get_many(["k1"])  # a read snapshot is now open
os.truncate(sys.argv[1], 0)
for key in ("k1500", "k1999", "k3"):
    try:
        store.get_many([key])
    except StoreError:
        pass
print("alive")
"""


def test_a_file_truncated_under_a_reader_is_no_crash(files: tuple[Path, Path, Path]) -> None:
    """Memory-mapped readers died of SIGBUS here (exit 135); in a subprocess, so a crash fails the test
    instead of ending the run."""
    live, _, _ = files
    done = subprocess.run([sys.executable, "-c", CRASH, str(live)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "alive"), done.stderr


def test_a_new_file_is_taken_only_once_it_has_an_active_version(tmp_path: Path) -> None:
    """A publish at a path the store lost writes its first version for a while: meanwhile the store
    stays down (a 503, not 'no such key'), and the publisher's WAL is left alone."""
    live = tmp_path / "live.db"
    build(live, 100)
    store = SQLiteStore(live, create=False)
    try:
        scores(store, ["k1"])
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{live}{suffix}")
        store.watch()
        publisher = SQLiteStore(live)  # a store, no version yet
        try:
            time.sleep(2.5 * WATCH_S)  # the recovery thread looked at least twice
            with pytest.raises(StoreError, match="no active version yet"):
                store.get_many(["k1"])
            publish(publisher, 600)
            soon(store, ["k1"], ("1", [601.0]), 5 * WATCH_S)
            assert scores(publisher, ["k1"]) == ("1", [601.0])
        finally:
            publisher.close()
    finally:
        store.close()
