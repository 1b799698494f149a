"""SQLite store failures through `augury serve` as a user runs it (issue 13): a deleted file and a file
locked by another process are 503 with Retry-After until they are back; a file that is not SQLite and a
file corrupted in place are 500. Every body names no path and no SQLite words; the server recovers by
itself each time the good file is back. (tests/store/test_sqlite_errors.py checks each kind through the
store API.)"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from pathlib import Path

import httpx

from augury.serve.errors import INTERNAL_ERROR, STORE_UNAVAILABLE

from .test_store_file import STATIC, build, serving, until


def answer(url: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/models/{STATIC}/predictions/k7", timeout=30)


def settles_on(url: str, status: int, root: Path, what: str) -> None:
    """Answers reach `status` (within 15 s), and the next few all have it, each with a clean body."""
    until(lambda: answer(url).status_code == status, 15, f"{status} for {what}")
    for _ in range(5):
        r = answer(url)
        assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
        if status == 200:
            assert r.json()["prediction"]["score"] == 107.0
            continue
        rid = r.headers["x-request-id"]
        said = STORE_UNAVAILABLE if status == 503 else INTERNAL_ERROR
        assert r.json() == {"error": f"{said} (request id {rid})"}, what
        assert str(root) not in r.text and "sqlite" not in r.text.lower()
        assert ("retry-after" in r.headers) == (status == 503), what


def test_store_failures_are_503_or_500_and_the_server_recovers(tmp_path: Path) -> None:
    live, saved, held = tmp_path / "live.db", tmp_path / "saved.db", tmp_path / "held.db"
    build(live, 100)
    shutil.copyfile(live, saved)
    with serving(live) as (url, proc):
        settles_on(url, 200, tmp_path, "the store")

        os.unlink(live)  # deleted
        settles_on(url, 503, tmp_path, "a deleted file")
        shutil.copyfile(saved, live)
        settles_on(url, 200, tmp_path, "the file back")

        shutil.copyfile(saved, held)  # replaced by a file another process holds locked
        con = sqlite3.connect(held, isolation_level=None, timeout=1)
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        con.execute("BEGIN EXCLUSIVE")
        con.execute("UPDATE augury_store SET value = value WHERE name = 'format'")
        os.replace(held, live)
        settles_on(url, 503, tmp_path, "a locked file")
        con.execute("COMMIT")
        con.close()
        settles_on(url, 200, tmp_path, "the lock released")

        notes = tmp_path / "notes.db"
        notes.write_bytes(b"these are notes, not a database\n" * 200)
        os.replace(notes, live)  # not SQLite
        settles_on(url, 500, tmp_path, "a file that is not SQLite")
        shutil.copyfile(saved, tmp_path / "good.db")
        os.replace(tmp_path / "good.db", live)
        settles_on(url, 200, tmp_path, "a store back")

        size = live.stat().st_size
        with open(live, "r+b") as f:  # corrupted in place (the size stays)
            f.seek(8192)
            f.write(bytes(range(256)) * ((size - 8192) // 256))
        settles_on(url, 500, tmp_path, "a file corrupted in place")
        time.sleep(0.5)
        assert proc.poll() is None
