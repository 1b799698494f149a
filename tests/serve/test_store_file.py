"""A static server whose store file changes under it (issue 11), through `augury serve` as a user runs
it (a subprocess: a crash shows as its exit, not as the test run's) on a real SQLite file: a copy over
the live file and a truncation never kill it, a deleted, republished or replaced file is reopened, and
readiness is 503 while the store cannot answer, found off the event loop."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from augury.models import function_model
from augury.serve.errors import INTERNAL_ERROR, STORE_UNAVAILABLE
from augury.serve.middleware import internal_error
from augury.serve.service import STORE_DOWN
from augury.store import MemoryStore, SQLiteStore, StoredPrediction
from augury.store.sqlite import DEFAULT_SNAPSHOT_S

from .helpers import live, publish_values

KEYS = [f"k{i}" for i in range(1_000)]
STATIC = "Static"
#: the store version of each model version published below (score = the model's number + the key's).
#: how long after a rewrite in place begins an answer may be read from pages of either file: one read
#: snapshot (the file is checked as each begins), with room for a slow machine.
TORN_S = 5 * DEFAULT_SNAPSHOT_S + 0.25
#: a request sent this long before a rewrite may still be answered after it began.
IN_FLIGHT_S = 0.1
VERSIONS = {"m100": "1", "m2000": "2", "m5000": "1", "m300": "1", "m400": "2", "m7000": "1", "m8000": "2",
            "m9000": "3"}


def publish(store: SQLiteStore, offset: int) -> str:
    batch = pa.record_batch({"key": pa.array(KEYS), "computed_at": pa.array([time.time()] * len(KEYS)),
                             "score": pa.array([float(offset + i) for i in range(len(KEYS))])})
    return store.publish([batch], model_version=f"m{offset}").version


def build(path: Path, *offsets: int) -> None:
    store = SQLiteStore(path)
    for offset in offsets:
        publish(store, offset)
    store.close()


class Lookups:
    """Clients looking up random keys until stopped; every answer checked: a 200 must hold the score of
    the version its provenance names (model m<offset>: offset + the key's number), anything else must be
    a clean 503 naming no path."""

    def __init__(self, url: str, root: Path) -> None:
        self.url, self.root = url, root
        self.stop = threading.Event()
        self.problems: list[tuple[float, str]] = []  # (when the request was sent, what was wrong)
        self.seen: list[tuple[float, int, str | None]] = []  # (when, status, model version)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        rng = random.Random()
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                i = rng.randrange(len(KEYS))
                sent = time.monotonic()
                r = client.get(f"{self.url}/v1/models/{STATIC}/predictions/k{i}")
                model = self._check(r, i)
                if model == "?":
                    self.problems.append((sent, f"{r.status_code} {r.text[:300]}"))
                self.seen.append((time.monotonic(), r.status_code, model))

    def _check(self, r: httpx.Response, i: int) -> str | None:
        if r.status_code == 503:
            if str(self.root) not in r.text and set(r.json()) == {"error"}:
                return None
        elif r.status_code == 200:
            body = r.json()
            provenance = body["provenance"]
            model = str(provenance["model_version"])
            if (provenance["source"] == "static" and r.headers["x-augury-store-version"] == VERSIONS[model]
                    and body["prediction"]["score"] == float(model[1:]) + i):
                return model
        return "?"

    def outside(self, windows: list[tuple[float, float]]) -> list[str]:
        """The problems of requests sent outside every (start, end) window."""
        return [p for sent, p in self.problems if not any(a <= sent <= b for a, b in windows)]

    def latest(self, model: str, since: float) -> bool:
        return any(t >= since and status == 200 and m == model for t, status, m in list(self.seen))

    def __enter__(self) -> Lookups:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s"
        time.sleep(0.02)
    return found


@contextmanager
def serving(live: Path, workers: int = 1) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`augury serve --store` on `live`, its output to server.log beside it (a pipe nobody reads would
    fill with the 503s' log lines and stop the server)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(live.with_name("server.log"), "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "augury.cli", "serve", "--port", str(port), "--store",
                                 f"sqlite:///{live}", "--name", STATIC, "--workers", str(workers)],
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            until(lambda: proc.poll() is not None or _answers(url), 60, "augury serve")
            assert proc.poll() is None, live.with_name("server.log").read_text()
            yield url, proc
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answered(url: str, key: str, store_version: str) -> Any:
    """`key`'s prediction once answered from `store_version` by as many requests in a row as it takes
    to have asked every worker (a few)."""
    def one() -> Any:
        r = httpx.get(f"{url}/v1/models/{STATIC}/predictions/{key}", timeout=10)
        return r.status_code == 200 and r.headers["x-augury-store-version"] == store_version and r

    first = until(one, 3, f"an answer from store version {store_version}").json()["prediction"]
    for _ in range(6):
        assert until(one, 3, f"an answer from store version {store_version}").json()["prediction"] == first
    return first


def ready(url: str) -> httpx.Response:
    return httpx.get(f"{url}/v2/health/ready", timeout=10)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_copy_over_the_live_file_and_a_truncation_never_kill_the_server(tmp_path: Path,
                                                                          workers: int) -> None:
    """A file rewritten in place is no SQLite file while it is written, and a read snapshot begun before
    may read pages of either: within `TORN_S` of each rewrite an answer may be wrong (docs/store.md);
    every other answer is right, or a clean 503."""
    live, saved, other = tmp_path / "live.db", tmp_path / "saved.db", tmp_path / "other.db"
    build(live, 100)
    shutil.copyfile(live, saved)
    build(other, 5000, 2000)  # active: version 2, model m2000
    torn: list[tuple[float, float]] = []

    def rewrite(change: Callable[[], object]) -> float:
        started = time.monotonic()
        change()
        torn.append((started - IN_FLIGHT_S, time.monotonic() + TORN_S))
        return started

    with serving(live, workers) as (url, proc), Lookups(url, tmp_path) as lookups:
        until(lambda: lookups.latest("m100", 0), 10, "a first answer")
        since = rewrite(lambda: shutil.copyfile(other, live))  # cp other.db live.db, under lookups
        until(lambda: lookups.latest("m2000", since), 5, "the copied file's version")
        rewrite(lambda: os.truncate(live, 0))
        down = until(lambda: (r := ready(url)).status_code == 503 and r, 5, "readiness 503")
        assert down.json() == {"ready": False, "error": "the prediction store cannot answer right now"}
        since = rewrite(lambda: shutil.copyfile(saved, live))
        until(lambda: lookups.latest("m100", since), 5, "the restored file's version")
        assert until(lambda: ready(url).status_code == 200, 5, "readiness 200")
        time.sleep(0.5)  # more answers from the restored file
        assert proc.poll() is None, "the server died"
    assert not lookups.outside(torn), lookups.outside(torn)[:5]
    assert proc.returncode in (0, 130, -signal.SIGINT), proc.returncode  # (stopped by the SIGINT; SIGBUS: -7)
    assert "was rewritten in place" in live.with_name("server.log").read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_deleted_republished_or_replaced_file_is_reopened(tmp_path: Path, workers: int) -> None:
    live, other = tmp_path / "live.db", tmp_path / "other.db"
    build(live, 100)
    build(other, 7000, 8000, 9000)  # active: version 3, model m9000
    with serving(live, workers) as (url, proc), Lookups(url, tmp_path) as lookups:
        until(lambda: lookups.latest("m100", 0), 10, "a first answer")
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{live}{suffix}")  # rm, then publish again
        down = until(lambda: (r := ready(url)).status_code == 503 and r, 3, "readiness 503")
        assert down.json() == {"ready": False, "error": "the prediction store cannot answer right now"}
        build(live, 300, 400)  # active: version 2, model m400
        since = time.monotonic()
        until(lambda: lookups.latest("m400", since), 3, "the republished version")
        assert until(lambda: ready(url).status_code == 200, 3, "readiness 200")  # (found once a second)
        assert answered(url, "k9", "2") == {"score": 409.0}  # (every worker: each switches on its own)
        since = time.monotonic()
        os.replace(other, live)  # mv other.db live.db
        until(lambda: lookups.latest("m9000", since), 3, "the moved file's version")
        assert answered(url, "k9", "3") == {"score": 9009.0}
        assert until(lambda: ready(url).status_code == 200, 3, "readiness 200") and proc.poll() is None
    assert not lookups.problems, lookups.problems[:5]
    log = live.with_name("server.log").read_text()
    # the mv is a replacement; the rm is logged as a deletion only if the once-a-second watch looks before
    # the new publish lands (the readiness check's reader can notice it first): either is right
    assert "was replaced" in log


class StuckStore(MemoryStore):
    """A memory store whose lookups hang for `stuck_s` once `stuck` is set (as SQLite's do while every
    reader is busy for the pool timeout, or the file is locked)."""

    def __init__(self, stuck_s: float) -> None:
        super().__init__()
        self.stuck = threading.Event()
        self.stuck_s = stuck_s

    def get_many(self, keys: Sequence[str]) -> list[StoredPrediction | None]:
        if self.stuck.is_set():
            time.sleep(self.stuck_s)
        return super().get_many(keys)


def test_the_readiness_check_never_blocks_the_event_loop() -> None:
    store = StuckStore(stuck_s=4.0)
    publish_values(store, ["k1"], [1.0])
    with live(None, store, name=STATIC) as url, httpx.Client(timeout=10) as client:
        assert client.get(f"{url}/v2/health/ready").status_code == 200
        store.stuck.set()
        time.sleep(1.1)  # the last check's answer is older than STORE_CHECK_S: the next one checks again
        answers: dict[str, httpx.Response] = {}
        probe = threading.Thread(target=lambda: answers.update(ready=client.get(f"{url}/v2/health/ready")))
        probe.start()
        time.sleep(0.2)  # the check is now stuck in the store, on its thread
        with httpx.Client(timeout=1.0) as other:  # a loop blocked by the check would time this out
            assert other.get(f"{url}/v2/health/live").json() == {"live": True}
            assert other.get(f"{url}/metrics").status_code == 200
        probe.join(10)
        assert answers["ready"].status_code == 503  # not answered within PROBE_WAIT_S: cannot answer
        assert answers["ready"].json() == {"ready": False, "error": STORE_DOWN}
        store.stuck.clear()
        assert until(lambda: client.get(f"{url}/v2/health/ready").status_code == 200, 10, "readiness 200")


def _short_model() -> Any:
    """value = a + b, but one row short: a model that breaks its contract (a 500, not the client's fault)."""

    @function_model(inputs={"a": "float64", "b": "float64"}, outputs={"value": "float64"}, version="1",
                    task="regression")
    def short(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"value": (batch["a"] + batch["b"])[:-1]}

    return short.to_model(name="short")


def test_5xx_bodies_name_no_paths_or_internals(tmp_path: Path) -> None:
    """A 500 (a model that broke its contract) and a 503 (a store that cannot answer) say only that, with
    the request id; the cause is in the log line with that id."""
    path = tmp_path / "s.db"
    build(path, 100)
    store = SQLiteStore(path, create=False)
    try:
        with live(_short_model(), store, name="short") as url, httpx.Client(timeout=10) as client:
            broken = client.post(f"{url}/v1/models/short:predict", json={"instances": [{"a": 1, "b": 2}]})
            os.unlink(path)
            down = until(lambda: (r := client.get(f"{url}/v1/models/short/predictions/k1")).status_code == 503
                         and r, 5, "a 503 for a lookup by key")
    finally:
        store.close()
    for r, words in ((broken, INTERNAL_ERROR), (down, STORE_UNAVAILABLE)):
        rid = r.headers["x-request-id"]
        assert r.json() == {"error": f"{words} (request id {rid})"}, r.text
    assert broken.status_code == 500


def test_an_exception_that_escapes_a_route_is_a_500_naming_nothing_of_it(caplog: Any) -> None:
    """(Its class, message and traceback go to the error log line with the request id.)"""
    scope = {"method": "GET", "path": "/v2"}
    with caplog.at_level(logging.ERROR, "augury.serve"):
        message = internal_error(scope, "rid1", KeyError("/srv/secret/store.db"))
    assert message == f"{INTERNAL_ERROR} (request id rid1)"
    assert "KeyError" in caplog.text and "/srv/secret/store.db" in caplog.text and "rid1" in caplog.text
