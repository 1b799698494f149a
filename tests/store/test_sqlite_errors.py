"""SQLite failures on real files, told apart (issue 13): a locked, deleted or replaced file is
`StoreUnavailable` (a server answers 503 with Retry-After), a corrupt file, a file that is not SQLite or
not a store, or one missing an augury table is `StoreBroken` (500). Each is checked through the store
and the server's error table (`serve.errors`); tests/serve/test_sqlite_failures.py runs `augury serve`."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pyarrow as pa
import pytest

from augury.errors import StoreBroken, StoreError, StoreUnavailable
from augury.serve.errors import headers_of, public_message, status_of
from augury.store import SQLiteStore
from augury.store.sqlite_errors import kind_of

KEYS = [f"k{i}" for i in range(2_000)]


def make_batch(keys: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"key": pa.array(keys), "computed_at": pa.array([time.time()] * len(keys)),
                            "score": pa.array([float(i) for i in range(len(keys))])})


def build(path: Path) -> None:
    store = SQLiteStore(path)
    store.publish([make_batch(KEYS)], model_version="m1")
    store.close()


def failure(call: object) -> StoreError:
    assert callable(call)
    with pytest.raises(StoreError) as info:
        call()
    assert info.value.__cause__ is not None or isinstance(info.value, StoreUnavailable | StoreBroken)
    return info.value


def served_as(error: StoreError, path: Path) -> int:
    """The status a server answers `error` with; its body never names the file."""
    assert str(path) not in public_message(error, "r1")
    return status_of(error)


@pytest.fixture()
def built(tmp_path: Path) -> Path:
    path = tmp_path / "store.db"
    build(path)
    return path


def held_exclusively(path: Path) -> sqlite3.Connection:
    """Another connection holding an exclusive lock on `path` (``locking_mode=EXCLUSIVE`` and a write
    transaction: in WAL mode nobody else can then read or write the file until it is closed)."""
    con = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    con.execute("PRAGMA locking_mode=EXCLUSIVE")
    con.execute("BEGIN EXCLUSIVE")
    con.execute("UPDATE augury_store SET value = value WHERE name = 'format'")
    return con


def test_sqlite_errors_are_classified_by_result_code(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(sqlite3.Error) as missing:
        con.execute("SELECT * FROM augury_pointer")
    assert kind_of(missing.value) is StoreBroken
    con.close()
    with pytest.raises(sqlite3.Error) as closed:
        con.execute("SELECT 1")
    assert kind_of(closed.value) is StoreUnavailable
    with pytest.raises(sqlite3.Error) as other:  # raised by the sqlite3 module itself, not by SQLite
        sqlite3.connect(":memory:").execute("SELECT ?", (1, 2))
    assert kind_of(other.value) in (StoreError, StoreBroken)


def test_a_locked_database_is_unavailable(built: Path) -> None:
    store = SQLiteStore(built, busy_timeout_s=0.2)
    try:
        con = sqlite3.connect(built, isolation_level=None, timeout=0.1)
        con.execute("BEGIN EXCLUSIVE")  # another writer that does not let go (a long publish)
        try:
            error = failure(lambda: store.publish([make_batch(["a"])], model_version="m2"))
            assert isinstance(error, StoreUnavailable) and "database is locked" in str(error)
            assert served_as(error, built) == 503 and headers_of(error) == {"retry-after": "1"}
            assert isinstance(failure(lambda: store.activate("1")), StoreUnavailable)
            assert store.get_many(["k1"])[0] is not None  # readers are not blocked by a writer (WAL)
        finally:
            con.close()
        assert store.publish([make_batch(["a"])], model_version="m2").version == "2"  # it retries fine
    finally:
        store.close()


def test_a_database_locked_for_reading_is_unavailable(built: Path) -> None:
    con = held_exclusively(built)
    try:
        error = failure(lambda: SQLiteStore(built, busy_timeout_s=0.2, create=False))
        assert isinstance(error, StoreUnavailable) and "locked" in str(error)
        assert served_as(error, built) == 503
    finally:
        con.close()
    SQLiteStore(built, create=False).close()


def test_a_deleted_file_is_unavailable_until_a_store_is_back(built: Path, tmp_path: Path) -> None:
    error = failure(lambda: SQLiteStore(tmp_path / "missing.db", create=False))
    assert isinstance(error, StoreUnavailable) and served_as(error, tmp_path) == 503
    store = SQLiteStore(built, create=False)
    try:
        saved = tmp_path / "saved.db"
        os.rename(built, saved)
        store.watch()  # (the reader janitor does it once a second)
        for call in (lambda: store.get_many(["k1"]), store.active, store.versions,
                     lambda: store.publish([make_batch(["a"])], model_version="m2")):
            error = failure(call)
            assert isinstance(error, StoreUnavailable), error
            assert served_as(error, built) == 503
        os.rename(saved, built)
        deadline = time.monotonic() + 10
        while True:  # the store finds it again by itself
            try:
                if store.get_many(["k1"])[0] is not None:
                    break
            except StoreUnavailable:
                pass
            assert time.monotonic() < deadline, "the store did not come back"
            time.sleep(0.05)
    finally:
        store.close()


def test_a_file_that_is_not_sqlite_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are notes, not a database\n" * 200)
    error = failure(lambda: SQLiteStore(path, create=False))
    assert isinstance(error, StoreBroken) and "not an SQLite database" in str(error)
    assert served_as(error, tmp_path) == 500 and headers_of(error) == {}


def test_an_sqlite_file_that_is_not_a_store_is_broken(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER)")
    con.close()
    error = failure(lambda: SQLiteStore(path, create=False))
    assert isinstance(error, StoreBroken) and served_as(error, tmp_path) == 500


def test_a_missing_augury_table_is_broken(built: Path) -> None:
    store = SQLiteStore(built, create=False, snapshot_s=0)
    try:
        con = sqlite3.connect(built)
        con.execute("DROP TABLE augury_pointer")
        con.commit()
        con.close()
        for call in (lambda: store.get_many(["k1"]), store.versions, store.active,
                     lambda: store.activate("1")):
            error = failure(call)
            assert isinstance(error, StoreBroken), error
            assert "no such table: augury_pointer" in str(error) and served_as(error, built) == 500
    finally:
        store.close()
    assert isinstance(failure(lambda: SQLiteStore(built, create=False)), StoreBroken)


def test_a_corrupt_record_is_broken(built: Path) -> None:
    con = sqlite3.connect(built)
    con.execute("UPDATE preds_1 SET v = x'c1' WHERE key = 'k7'")
    con.commit()
    con.close()
    store = SQLiteStore(built, create=False)
    try:
        assert store.get_many(["k1"])[0] is not None
        for keys in (["k7"], ["k1", "k7"]):
            error = failure(lambda keys=keys: store.get_many(keys))
            assert isinstance(error, StoreBroken) and "corrupt record for key 'k7'" in str(error)
            assert served_as(error, built) == 500
    finally:
        store.close()


def corrupt(path: Path) -> None:
    """Overwrite every page after the first two with garbage, in place (the size stays)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(8192)
        f.write(bytes(range(256)) * ((size - 8192) // 256))


def test_a_corrupted_file_is_broken(built: Path) -> None:
    corrupt(built)
    error = failure(lambda: SQLiteStore(built, create=False))
    assert isinstance(error, StoreBroken), error
    assert "malformed" in str(error) or "not a database" in str(error)
    assert served_as(error, built) == 500


def test_a_file_corrupted_under_an_open_store_is_broken_once_it_is_looked_at(built: Path) -> None:
    """While the file changed under it, a malformed read may be the rewrite (unavailable); once the store
    has looked at the file (its janitor does within a second), it is broken."""
    store = SQLiteStore(built, create=False)
    try:
        assert store.get_many(["k1"])[0] is not None
        corrupt(built)
        deadline = time.monotonic() + 10
        while True:
            store.watch()
            try:
                store.get_many(KEYS[::7])
            except StoreBroken as exc:
                assert served_as(exc, built) == 500
                break
            except StoreUnavailable:
                pass
            assert time.monotonic() < deadline, "never called broken"
            time.sleep(0.1)
    finally:
        store.close()


def test_an_exhausted_reader_pool_is_unavailable(built: Path) -> None:
    store = SQLiteStore(built, create=False, max_readers=1, pool_timeout_s=0.05)
    try:
        reader = store._pool.acquire()  # the one reader, lent out and not given back in time
        error = failure(lambda: store.get_many(["k1"]))
        assert isinstance(error, StoreUnavailable) and "stayed busy" in str(error)
        assert served_as(error, built) == 503
        store._pool.release(reader)
        assert store.get_many(["k1"])[0] is not None
    finally:
        store.close()
