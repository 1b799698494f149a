"""A publish in parts into SQLite from several processes, and one killed midway (issue 13); the contract
suite (test_contract.py) checks the rest of the handle on every backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from augury.errors import InputError, StoreError
from augury.store import LOADING, ORPHAN, READY, SQLiteStore
from augury.store.lease import lease_path

WRITER = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    from augury.errors import InputError
    from augury.store import SQLiteStore

    path, version, part = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = SQLiteStore(path, create=False)
    handle = store.join_publish(version)
    for b in range(4):
        keys = [f"p{part}-{b}-{i}" for i in range(500)] + (["shared"] if part == 0 and b == 3 else [])
        batch = pa.record_batch({"key": keys, "computed_at": pa.array([time.time()] * len(keys)),
                                 "score": [float(part)] * len(keys)})
        try:
            handle.write(batch)
        except InputError as exc:
            print("refused:", exc, flush=True)
    store.close()
""")

KILLED = textwrap.dedent("""
    import sys, time
    import pyarrow as pa
    from augury.store import SQLiteStore

    store = SQLiteStore(sys.argv[1])
    handle = store.begin_publish(model_version="killed")
    handle.write(pa.record_batch({"key": ["a", "b"], "computed_at": pa.array([time.time()] * 2),
                                  "score": [1.0, 2.0]}))
    print(handle.version, flush=True)
    time.sleep(600)
""")


def batch(keys: list[str], score: float = 0.0) -> pa.RecordBatch:
    return pa.record_batch({"key": keys, "computed_at": pa.array([time.time()] * len(keys)),
                            "score": [score] * len(keys)})


def test_parts_written_by_several_processes_make_one_version(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    try:
        store.publish([batch(["old"])], model_version="m1")
        handle = store.begin_publish(model_version="m2")
        handle.write(batch(["shared"], -1.0))
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), handle.version, str(part)],
                                    stdout=subprocess.PIPE, text=True) for part in range(3)]
        outputs = [w.communicate(timeout=60)[0] for w in writers]
        assert [w.returncode for w in writers] == [0, 0, 0]
        assert "refused: key 'shared' appears more than once" in outputs[0]  # that batch kept nothing
        assert [(v.version, v.state) for v in store.versions()] == [("1", READY), ("2", LOADING)]
        assert handle.commit() == "2"
        info = store.active()
        assert info is not None and info.row_count == 1 + 3 * 4 * 500 - 500 and info.columns == ("score",)
        found = store.get_many(["p0-0-0", "p1-3-499", "p2-2-7", "shared", "p0-3-0", "old"])
        assert [p.values["score"] if p else None for p in found] == [0.0, 1.0, 2.0, -1.0, None, None]
        assert not os.path.exists(lease_path(str(path), 2))
    finally:
        store.close()


def test_a_publish_killed_midway_is_an_orphan_that_gc_cleans(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    try:
        store.publish([batch(["a"])], model_version="m1")
        proc = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            version = proc.stdout.readline().strip()
            assert version == "2"
            joined = store.join_publish(version)  # while its publisher lives, anyone may write parts
            assert [(v.version, v.state) for v in store.versions()] == [("1", READY), ("2", LOADING)]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert [(v.version, v.state) for v in store.versions()] == [("1", READY), ("2", ORPHAN)]
        with pytest.raises(StoreError, match="gone"):
            joined.write(batch(["c"]))  # a joined writer is told, and writes nothing
        with pytest.raises(StoreError, match="orphan"):
            store.join_publish(version)
        assert os.path.exists(lease_path(str(path), 2))
        assert store.gc() == ["2"]
        assert [v.version for v in store.versions()] == ["1"]
        assert not os.path.exists(lease_path(str(path), 2))
        assert store.begin_publish(model_version="m3").version == "3"  # numbers are never reused
    finally:
        store.close()


def test_a_handle_is_over_after_its_commit_or_abort(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    try:
        empty = store.begin_publish(model_version="m1")
        assert empty.commit() == "1"
        info = store.active()
        assert info is not None and info.row_count == 0 and info.columns == ()
        assert store.get_many(["a"]) == [None]
        for over in (empty.commit, empty.abort, lambda: empty.write(batch(["a"]))):
            with pytest.raises(StoreError, match="over"):
                over()
        handle = store.begin_publish(model_version="m2")
        with pytest.raises(InputError, match="key 'x' appears more than once"):
            handle.write(batch(["x", "y", "x"]))
        handle.write(batch(["x"]))
        with pytest.raises(StoreError):
            store.delete(handle.version)
        assert store.gc() == []
        handle.abort()
        assert [v.version for v in store.versions()] == ["1"]
        with pytest.raises(StoreError, match="over"):
            handle.write(batch(["z"]))
    finally:
        store.close()
