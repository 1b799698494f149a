"""The WAL index (``-shm``) of a static server's SQLite store cut under it (issue 11), through `augury
serve` in a subprocess on a real file. SQLite memory-maps the ``-shm`` in every connection, and a mapped
page past the end of the file is SIGBUS: the server died of it (exit 135, no log line). It now stats the
``-shm`` before each read snapshot and checkpoint, and reopens the file when it was cut
(`store.sqlite_watch`); a version published after the cut by another process is served, so the server
and the publisher share one index again. (tests/store/test_sqlite_file.py checks it through the store.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .test_store_file import Lookups, answered, build, ready, serving, until


def test_a_cut_wal_index_is_noticed_and_the_store_reopened_under_load(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    build(live, 100)
    with serving(live) as (url, proc), Lookups(url, tmp_path) as lookups:
        until(lambda: lookups.latest("m100", 0), 10, "a first answer")
        build(live, 2000)  # version 2, by another process
        since = time.monotonic()
        until(lambda: lookups.latest("m2000", since), 5, "the published version")
        time.sleep(1.0)  # its WAL frames checkpointed: lookups inside a snapshot no longer read the index
        for _ in range(3):
            os.truncate(f"{live}-shm", 0)  # truncate -s 0 live.db-shm, under lookups
            time.sleep(0.7)
            assert proc.poll() is None, "the server died"
        assert answered(url, "k9", "2") == {"score": 2009.0}
        build(live, 9000)  # version 3, by another process after the cuts: the server sees it
        assert answered(url, "k9", "3") == {"score": 9009.0}
        assert ready(url).status_code == 200 and proc.poll() is None
    assert not lookups.problems, lookups.problems[:5]  # every answer right, or a clean 503
    assert proc.returncode in (0, 130, -signal.SIGINT), proc.returncode  # (SIGBUS: -7)
    assert "(its -shm file) was cut under the store: reopening it" in live.with_name("server.log").read_text()
