"""`open_store`: URL schemes, options and their errors; named memory stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest

from augury.errors import ConfigError, StoreError
from augury.store import MemoryStore, SQLiteStore, open_store

BatchOf = Callable[..., pa.RecordBatch]


def test_sqlite_relative_and_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///sub.db")
    assert isinstance(relative, SQLiteStore) and relative.path == str(tmp_path / "sub.db")
    assert relative.url == "sqlite:///sub.db"
    relative.close()
    absolute = open_store(
        f"sqlite:///{tmp_path / 'abs.db'}", max_readers=2, busy_timeout_s=5, pool_timeout_s=1
    )
    assert isinstance(absolute, SQLiteStore) and absolute.path == str(tmp_path / "abs.db")
    absolute.close()
    assert (tmp_path / "sub.db").exists() and (tmp_path / "abs.db").exists()


def test_memory_stores_private_and_named(batch_of: BatchOf) -> None:
    a, b = open_store("memory://"), open_store("memory://")
    assert isinstance(a, MemoryStore) and a is not b
    a.publish([batch_of(["k"])], model_version="m")
    assert b.get_many(["k"]) == [None]
    shared1, shared2 = (
        open_store("memory://test-open-store-shared"),
        open_store("memory://test-open-store-shared"),
    )
    assert shared1 is shared2
    shared1.publish([batch_of(["k"])], model_version="m")
    assert shared2.get_many(["k"])[0] is not None
    assert open_store("memory://another-name").get_many(["k"]) == [None]


@pytest.mark.parametrize(
    "url, message",
    [
        ("redis://:6379/0", "bad Redis store URL"),
        ("redis://localhost:6379/0?pool=3", r"unknown Redis store option\(s\) \['pool'\]"),
        ("redis://localhost/0?prefix=a*b", "prefix='a\\*b' must be"),
        ("redis://localhost/0?lease_s=0", "lease_s must be a positive number"),
        ("redis://localhost/0?max_connections=x", "not a number"),
        ("postgres://db/x", "unknown store URL scheme 'postgres://'.*sqlite:///path.db.*memory://.*redis://"),
        ("store.db", "no scheme"),
        ("sqlite://", "bad SQLite store URL"),
        ("sqlite://host/x.db", "bad SQLite store URL"),
        ("sqlite:///:memory:", "memory://"),
        ("memory://a/b", "bad memory store URL"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(url)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"pool_size": 3}, "unknown SQLite store option"),
        ({"max_readers": 0}, "must be positive"),
        ({"max_readers": True}, "must be positive"),
        ({"busy_timeout_s": "soon"}, "not a number"),
        ({"snapshot_s": -0.1}, r"must be positive or 0 \(0 turns read snapshots off\)"),
        ({"snapshot_s": "soon"}, "not a number"),
        ({"snapshot_s": "nan"}, "finite"),
        ({"snapshot_s": float("inf")}, "finite"),
        ({"snapshot_s": False}, "must be positive or 0"),
        ({"pool_timeout_s": 0}, "must be positive, not 0"),
    ],
)
def test_bad_sqlite_options_are_config_errors(
    tmp_path: Path, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        open_store(f"sqlite:///{tmp_path / 's.db'}", **options)


def test_memory_takes_no_options() -> None:
    with pytest.raises(ConfigError, match="no options"):
        open_store("memory://", max_readers=2)


def test_create_false_refuses_a_missing_or_empty_sqlite_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    with pytest.raises(StoreError, match=f"^no store at {missing} "):
        open_store(f"sqlite:///{missing}", create=False)
    assert not missing.exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match=r"no store at .*empty\.db \(the file is empty\)"):
        open_store(f"sqlite:///{empty}", create=False)
    assert empty.stat().st_size == 0
    odd = tmp_path / "a dir?#%20" / "s.db"  # characters special in a URI (the store opens one)
    odd.parent.mkdir()
    SQLiteStore(odd).close()
    existing = SQLiteStore(odd, create=False)
    assert existing.versions() == []
    existing.close()
    assert sorted(p.name for p in odd.parent.iterdir() if p.suffix == ".db") == ["s.db"]


def test_create_false_leaves_memory_stores_as_they_are() -> None:
    store = open_store("memory://test-open-store-never-published", create=False)
    assert store.versions() == [] and store.get_many(["k"]) == [None]
