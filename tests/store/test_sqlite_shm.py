"""A store's WAL index (``-shm``) cut under an open `SQLiteStore` (issue 11). SQLite memory-maps it in
every connection, so a read of a cut one is SIGBUS: the store stats it before each read snapshot, each
checkpoint and its close, and lets go of the file and reopens it (`sqlite_watch`). In a subprocess, so
that a crash fails the test instead of ending the run. (tests/serve/test_store_shm.py: under a server.)
And a store idle long enough to have no reader janitor, whose file changes: its lookups bring one back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

from augury.errors import StoreError
from augury.store import SQLiteStore
from augury.store.sqlite_watch import Shm, shm_shrank

CUT = """
import os, sys, time
import pyarrow as pa
from augury.errors import StoreError
from augury.errors import StoreError
from augury.store import SQLiteStore

path, shm = sys.argv[1], sys.argv[1] + "-shm"
KEYS = [f"k{i}" for i in range(2_000)]

def scores(store, keys):
    deadline = time.monotonic() + 10
    while True:
        try:
            found = store.get_many(keys)
            return {p.store_version for p in found}, [p.values["score"] for p in found]
        except StoreError:  # (while the file is let go of and reopened)
            assert time.monotonic() < deadline, "never reopened"
            time.sleep(0.02)

store = SQLiteStore(path, create=False)
assert scores(store, ["k1", "k2"]) == ({"1"}, [101.0, 102.0])  # a read snapshot is now open
os.truncate(shm, 0)
for key in ("k1500", "k1999", "k3"):  # inside the snapshot, or noticed as the next one begins
    try:
        store.get_many([key])
    except StoreError:
        pass
time.sleep(0.3)  # the janitor notices it (its checkpoint would read the index) and reopens the file
assert scores(store, ["k1", "k1999"]) == ({"1"}, [101.0, 2099.0])
batch = pa.record_batch({"key": pa.array(KEYS), "computed_at": pa.array([time.time()] * len(KEYS)),
                         "score": pa.array([2000.0 + i for i in range(len(KEYS))])})
assert store.publish([batch], model_version="m2000").version == "2"
assert scores(store, ["k5"]) == ({"2"}, [2005.0])
os.truncate(shm, 0)
store.close()  # at once: closing as usual would checkpoint through the cut index
again = SQLiteStore(path, create=False)
assert scores(again, ["k5", "k1999"]) == ({"2"}, [2005.0, 3999.0])  # nothing committed was lost
time.sleep(1.5)  # idle: its reader janitor is gone
os.truncate(shm, 0)
assert scores(again, ["k5"]) == ({"2"}, [2005.0])  # lookups alone bring the janitor that reopens it
again.close()
print("alive")
"""


def test_a_cut_wal_index_is_noticed_reopened_and_nothing_committed_is_lost(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    store = SQLiteStore(live)  # version 1: score = 100 + the key's number
    keys = [f"k{i}" for i in range(2_000)]
    store.publish([pa.record_batch({"key": pa.array(keys), "computed_at": pa.array([0.0] * len(keys)),
                                    "score": pa.array([100.0 + i for i in range(len(keys))])})],
                  model_version="m100")
    store.close()
    done = subprocess.run([sys.executable, "-c", CUT, str(live)], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "alive"), (done.returncode, done.stderr[-3000:])
    assert "(its -shm file) was cut under the store: reopening it" in done.stderr


WRITE_AFTER_CUT = """
import os, sys, time
import pyarrow as pa
from augury.store import SQLiteStore, WrittenBack

path = sys.argv[1]
store = SQLiteStore(path, create=False)
store.get_many(["k1"])  # (the writer and a reader have the index mapped)
for i in range(3):
    os.truncate(path + "-shm", 0)
    store.write_back([WrittenBack(f"w{i}", {"score": float(i)}, "m", time.time(), time.time() + 60)])
os.truncate(path + "-shm", 0)
batch = pa.record_batch({"key": ["n"], "computed_at": pa.array([time.time()]), "score": [7.0]})
assert store.publish([batch], model_version="m7").version == "2"
assert [w.values for w in store.written_back(["w0", "w2"], "m")] == [{"score": 0.0}, {"score": 2.0}]
store.close()
print("alive")
"""


def test_a_write_after_a_cut_wal_index_reopens_the_file_first(tmp_path: Path) -> None:
    """A write (a write-back, a publish) reads the WAL index too: one cut under the store is reopened
    before the write, not read (SIGBUS)."""
    live = tmp_path / "live.db"
    store = SQLiteStore(live)
    store.publish([pa.record_batch({"key": ["k1"], "computed_at": pa.array([0.0]), "score": [1.0]})],
                  model_version="m")
    store.close()
    done = subprocess.run([sys.executable, "-c", WRITE_AFTER_CUT, str(live)], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "alive"), (done.returncode, done.stderr[-3000:])


def test_an_idle_store_reopens_a_replaced_file_on_its_next_lookups(tmp_path: Path) -> None:
    """A store idle for a second has no reader janitor, the thread that watches the file and reopens it;
    a lookup that finds the file replaced brings one back (its lookups failed until a restart)."""
    keys = [f"k{i}" for i in range(10)]
    for name, offset in (("live.db", 100.0), ("other.db", 5000.0)):
        store = SQLiteStore(tmp_path / name)
        store.publish([pa.record_batch({"key": pa.array(keys), "computed_at": pa.array([0.0] * 10),
                                        "score": pa.array([offset + i for i in range(10)])})],
                      model_version=f"m{offset:g}")
        store.close()
    store = SQLiteStore(tmp_path / "live.db", create=False)
    try:
        assert store.get_many(["k1"])[0].values == {"score": 101.0}  # type: ignore[union-attr]
        time.sleep(1.5)  # idle: the janitor is gone
        os.replace(tmp_path / "other.db", tmp_path / "live.db")  # mv other.db live.db
        deadline = time.monotonic() + 5
        while True:
            try:
                found = store.get_many(["k1"])[0]
                break
            except StoreError:
                assert time.monotonic() < deadline, "never reopened"
                time.sleep(0.02)
        assert found is not None and found.values == {"score": 5001.0}
    finally:
        store.close()


def test_shm_shrank() -> None:
    assert not shm_shrank(None, None)  # never seen: nothing to compare
    assert not shm_shrank(Shm(1, 2, 32768), Shm(1, 2, 32768))
    assert not shm_shrank(Shm(1, 2, 32768), Shm(1, 2, 65536))  # SQLite grows it
    assert shm_shrank(Shm(1, 2, 32768), Shm(1, 2, 0))  # truncated
    assert shm_shrank(Shm(1, 2, 32768), Shm(1, 3, 32768))  # another file
    assert shm_shrank(Shm(1, 2, 32768), None)  # deleted
