"""A mistyped store path is an error, never a new empty store: only `augury publish` creates one.

Before, `store versions`, `store get`, `verify --store` and `serve --store` on a path that did not exist
created an SQLite file there and answered "no versions", "(miss)" or served nothing, as if the path
were right (issue 10). Each command here runs as a user runs it, in a real `augury` process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from .test_cli import augury


def predictions(tmp_path: Path) -> Path:
    out = tmp_path / "p.parquet"
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "a": [1.0, 2.0], "b": [1.0, 1.0]}), src)
    proc = augury("batch", "fixture_models:add", str(src), "-o", str(out), "--key", "id", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("command", [
    ("store", "versions"),
    ("store", "get", "x"),
    ("store", "rollback"),
    ("store", "activate", "1"),
    ("store", "gc"),
    ("store", "delete", "1"),
    ("verify", "PREDICTIONS"),
])
def test_commands_that_do_not_publish_never_create_a_store(tmp_path: Path, command: tuple[str, ...]) -> None:
    missing = tmp_path / "typo.db"
    args = [str(predictions(tmp_path)) if a == "PREDICTIONS" else a for a in command]
    proc = augury(*args, "--store", f"sqlite:///{missing}")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [
        f"augury: no store at {missing} (a store is created by its first publish; check the path)"
    ]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not missing.exists()


def test_an_empty_file_is_no_store_either(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    proc = augury("store", "versions", "--store", f"sqlite:///{empty}")
    assert proc.returncode == 2
    assert f"augury: no store at {empty} (the file is empty)" in proc.stderr
    assert empty.stat().st_size == 0


def test_publish_creates_the_store_and_then_it_reads(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    proc = augury("publish", str(predictions(tmp_path)), "--store", f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stderr
    proc = augury("store", "get", "x", "--store", f"sqlite:///{path}", "--json")
    assert proc.returncode == 0, proc.stderr
    proc = augury("verify", str(tmp_path / "p.parquet"), "--store", f"sqlite:///{path}")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_serve_refuses_to_start_on_a_missing_store(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    proc = subprocess.run(
        [sys.executable, "-m", "augury.cli", "serve", "--port", "0", "--store", f"sqlite:///{missing}",
         "--name", "m"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"augury: no store at {missing} (a store is created by its first publish; check the path)"
    ]
    assert not missing.exists()


@pytest.mark.parametrize("what", ["missing", "not parquet"])
def test_a_publish_of_a_bad_predictions_file_creates_no_store(tmp_path: Path, what: str) -> None:
    path = tmp_path / "new.db"
    bad = tmp_path / "p.parquet"
    if what == "not parquet":
        bad.write_text("key,label\nx,1\n")
    proc = augury("publish", str(bad), "--store", f"sqlite:///{path}")
    assert proc.returncode == 2, proc.stderr
    assert not path.exists()
