"""The static path's commands on a Redis store (a real redis-server on a free loopback port): batch,
verify against the active version, publish, get, versions, rollback, gc; and one clear line when Redis
is stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from redis_server import RedisServer

from .test_cli import assert_clean_error, augury


def test_batch_verify_publish_get_rollback_gc_on_redis(tmp_path: Path, redis_url: str) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["x", "y", "z"], "a": [1.0, 2.0, 3.0], "b": [1.0, 1.0, 1.0]}), source)
    out = tmp_path / "p.parquet"
    proc = augury("batch", "fixture_models:add", str(source), "-o", str(out), "--key", "id", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    store = f"{redis_url}?prefix=cli"

    proc = augury("store", "versions", "--store", store)
    assert_clean_error(proc, 2, "no store at redis://127.0.0.1")  # nothing published under this prefix
    for expected in ("1", "2"):
        proc = augury("publish", str(out), "--store", store, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["version"]["store_version"] == expected
    proc = augury("verify", str(out), "--store", store)  # drift against the active version
    assert proc.returncode == 0, proc.stderr + proc.stdout

    proc = augury("store", "get", "x", "nope", "--store", store, "--json")
    assert proc.returncode == 1  # a miss is reported
    results = json.loads(proc.stdout)["results"]
    assert results[0]["prediction"] == {"value": 2.0} and results[1]["prediction"] is None
    assert results[0]["provenance"]["source"] == "static"
    assert results[0]["provenance"]["store_version"] == "2"

    proc = augury("store", "rollback", "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    proc = augury("store", "versions", "--store", store, "--json")
    assert [(v["store_version"], v["active"]) for v in json.loads(proc.stdout)["versions"]] == [
        ("1", True), ("2", False)]
    proc = augury("store", "activate", "2", "--store", store)
    assert proc.returncode == 0, proc.stderr
    proc = augury("store", "gc", "--keep", "1", "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["deleted"] == ["1"]


def test_redis_stopped_is_one_clear_line(tmp_path: Path, redis_server: RedisServer, redis_url: str) -> None:
    redis_server.stop()
    try:
        for args in (("store", "versions"), ("store", "get", "x")):
            proc = augury(*args, "--store", f"{redis_url}?connect_timeout_s=0.5")
            assert_clean_error(proc, 2, "cannot be reached")
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    finally:
        redis_server.start()
