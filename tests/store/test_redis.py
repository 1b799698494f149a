"""The Redis store beyond the shared contract: publish handles (parallel writers, kill -9 midway), gc with
SCAN/UNLINK, write-backs with Redis's own expiry, following a switch by pub/sub, URLs, and faults, on a
real redis-server (`tests/redis_server.py`)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import redis

from augury.errors import ConfigError, InputError, StoreBroken, StoreError, StoreUnavailable
from augury.store import (
    ORPHAN,
    READY,
    PredictionReader,
    PredictionStore,
    Publishing,
    VersionAdmin,
    WrittenBack,
    open_store,
)
from augury.store.redis_store import RedisStore
from redis_server import RedisServer, free_port, redis_server_binary

BatchOf = Callable[..., pa.RecordBatch]


@pytest.fixture()
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client on the same database, to look at the keys."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture()
def rstore(redis_url: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_url, lease_s=0.6, poll_s=0.2)
    yield store
    store.close()


def prediction_keys(raw: redis.Redis, version: str) -> int:
    return sum(1 for _ in raw.scan_iter(match=f"augury:v:{version}:*", count=1000))


def until(check: Callable[[], bool], within_s: float = 5.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within_s, "not within the time allowed"
        time.sleep(0.01)
    return time.monotonic() - start


def test_the_redis_store_takes_a_publish_in_parts(rstore: RedisStore) -> None:
    assert isinstance(rstore, PredictionStore) and isinstance(rstore, Publishing)
    assert isinstance(rstore, PredictionReader) and isinstance(rstore, VersionAdmin)


def test_parts_written_in_parallel_make_one_version(rstore: RedisStore, redis_url: str,
                                                    batch_of: BatchOf) -> None:
    handle = rstore.begin_publish(model_version="m1")
    other = RedisStore(redis_url)
    try:
        joined = other.join_publish(handle.version)
        parts = [[f"k{i}" for i in range(p, 4_000, 4)] for p in range(4)]
        threads = [threading.Thread(target=(handle if p % 2 else joined).write, args=(batch_of(parts[p]),))
                   for p in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert rstore.get_many(["k1"]) == [None]  # nothing is visible before the commit
        with pytest.raises(StoreError, match="only the process that began"):
            joined.commit()
        handle.commit()
        info = rstore.active()
        assert info is not None and info.row_count == 4_000 and info.version == handle.version
        assert all(r is not None for r in other.get_many([f"k{i}" for i in range(4_000)]))
    finally:
        other.close()


def test_a_key_written_by_two_writers_is_refused(rstore: RedisStore, batch_of: BatchOf) -> None:
    handle = rstore.begin_publish(model_version="m1")
    handle.write(batch_of(["a", "b"]))
    joined = rstore.join_publish(handle.version)
    with pytest.raises(InputError, match="key 'b' appears more than once"):
        joined.write(batch_of(["c", "b"]))
    handle.abort()
    assert rstore.versions() == []


SLOW_PUBLISH = """
import sys, time
import pyarrow as pa
from augury.store.redis_store import RedisStore
store = RedisStore(sys.argv[1], lease_s=0.5)
def batches():
    yield pa.record_batch({"key": [f"n{i}" for i in range(2000)], "computed_at": [time.time()] * 2000,
                           "score": [1.0] * 2000})
    print("loading", flush=True)
    time.sleep(60)
store.publish(batches(), model_version="killed")
"""


def test_kill_9_mid_publish_leaves_an_orphan_that_gc_removes(rstore: RedisStore, redis_url: str,
                                                             raw: redis.Redis, batch_of: BatchOf) -> None:
    keys = [f"k{i}" for i in range(1_000)]
    rstore.publish([batch_of(keys)], model_version="good")
    before = rstore.get_many(keys)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PUBLISH, redis_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline().strip()
        assert line == "loading", proc.stderr.read() if proc.poll() is not None else line
        assert [(v.version, v.state) for v in rstore.versions()] == [("1", READY), ("2", "loading")]
        with pytest.raises(StoreError, match="live publish"):
            rstore.delete("2")
        assert rstore.gc(keep=0) == []  # a live publish is never collected
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL
    assert rstore.get_many(keys) == before
    until(lambda: [v.state for v in rstore.versions()] == [READY, ORPHAN])  # its lease expired
    assert prediction_keys(raw, "2") == 2_000
    assert rstore.gc(keep=5) == ["2"]
    assert prediction_keys(raw, "2") == 0 and prediction_keys(raw, "1") == 1_000
    assert not raw.exists("augury:meta:2", "augury:lease:2")
    assert rstore.publish([batch_of(["x"])], model_version="next").version == "3"


def test_gc_removes_old_versions_and_stray_keys(rstore: RedisStore, raw: redis.Redis,
                                                batch_of: BatchOf) -> None:
    for _ in range(4):
        rstore.publish([batch_of([f"k{i}" for i in range(300)])], model_version="m")
    raw.set("augury:v:2:stray", b"x")  # a key of a version that has no record (a late joined writer)
    rstore.delete("2")
    raw.set("augury:v:2:stray", b"x")
    raw.set("augury:v:99:future", b"x")  # above the counter: a number not yet taken is left alone
    assert rstore.gc(keep=1) == ["1", "3"]
    assert [prediction_keys(raw, v) for v in "1234"] == [0, 0, 0, 300]
    assert raw.exists("augury:v:99:future")


def test_write_backs_expire_in_redis(rstore: RedisStore, raw: redis.Redis) -> None:
    now = time.time()
    rows = [WrittenBack("a", {"p": 1.5}, "m:1", now, now + 0.3, b"\x01" * 16),
            WrittenBack("b", {"p": 2.5}, "m:1", now, now + 60)]
    rstore.write_back(rows)
    a, b = rstore.written_back(["a", "b", "c"], "m:1")[:2]
    assert a is not None and a.values == {"p": 1.5} and a.features_hash == b"\x01" * 16
    assert b is not None and b.computed_at == pytest.approx(now, abs=1e-6)
    assert rstore.written_back(["a"], "m") == [None]  # another model version (no ':' confusion)
    keys = list(raw.scan_iter(match="augury:wb:*"))
    assert len(keys) == 2 and all(0 < raw.pttl(k) <= 60_000 for k in keys)
    until(lambda: rstore.written_back(["a"], "m:1") == [None])
    until(lambda: len(list(raw.scan_iter(match="augury:wb:*"))) == 1)  # Redis removed it itself
    assert rstore.prune_written_back() == 0


def test_another_server_follows_a_switch_by_notification(redis_url: str, batch_of: BatchOf) -> None:
    """poll_s is a minute here: only the pub/sub message can tell the reader in time."""
    publisher, server = RedisStore(redis_url), RedisStore(redis_url, poll_s=60)
    try:
        publisher.publish([batch_of(["a"])], model_version="m1")
        assert server.active() is not None  # (as a server starts: before any lookup)
        assert server.get_many(["a"])[0] is not None  # the first lookup reads the pointer and subscribes
        time.sleep(0.2)
        publisher.publish([batch_of(["a"], score=pa.array([7.0]))], model_version="m2")
        took = until(lambda: (server.get_many(["a"])[0] or publisher).model_version == "m2", within_s=1.0)
        assert took < 1.0
        publisher.rollback()
        until(lambda: (server.get_many(["a"])[0] or publisher).model_version == "m1", within_s=1.0)
    finally:
        publisher.close()
        server.close()


def test_urls(redis_server: RedisServer, redis_url: str, batch_of: BatchOf) -> None:
    with pytest.raises(StoreError, match=r"no store at .*nothing was ever published"):
        open_store(redis_url, create=False)
    store = open_store(f"{redis_url}?prefix=team-a", create=True)
    store.publish([batch_of(["a"])], model_version="m")
    via_socket = open_store(f"unix://{redis_server.socket}?db=0&prefix=team-a", create=False)
    assert [r.model_version for r in via_socket.get_many(["a"]) if r] == ["m"]
    assert open_store(redis_url).get_many(["a"]) == [None]  # another prefix, another store
    secret = open_store(f"redis://:hunter2@127.0.0.1:{redis_server.port}/0")
    assert "hunter2" not in secret.url and ":***@" in secret.url
    assert secret.versions() == []  # (this server has no password: redis-py goes on without one)
    out_of_range = open_store(f"redis://:hunter2@127.0.0.1:{redis_server.port}/99")
    with pytest.raises(StoreError, match="DB index") as refused:  # refused: retrying will not help
        out_of_range.versions()
    assert "hunter2" not in str(refused.value) and not isinstance(refused.value, StoreUnavailable)
    with pytest.raises(ConfigError, match="given twice"):
        open_store(f"{redis_url}?prefix=a", prefix="b")
    for s in (store, via_socket, secret, out_of_range):
        s.close()


def test_redis_stopped_is_unavailable_and_the_store_recovers(redis_server: RedisServer, redis_url: str,
                                                             batch_of: BatchOf) -> None:
    """Stopped: every call is StoreUnavailable (not a hang: the timeouts are short); restarted on the same
    port (empty: no persistence), the same store object answers again without being reopened."""
    store = RedisStore(redis_url, poll_s=0.2, socket_timeout_s=0.5, connect_timeout_s=0.5)
    try:
        store.publish([batch_of(["a"])], model_version="m1")
        assert store.get_many(["a"])[0] is not None
        redis_server.stop()
        for call in (lambda: store.get_many(["a"]), store.active, store.versions,
                     lambda: store.publish([batch_of(["b"])], model_version="m2")):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="cannot be reached"):
                call()
            assert time.monotonic() - started < 5
        redis_server.start()
        store.publish([batch_of(["b"])], model_version="m3")
        until(lambda: [r.model_version for r in store.get_many(["a", "b"]) if r] == ["m3"])
    finally:
        store.close()
        if redis_server.proc is None:
            redis_server.start()


def test_a_corrupt_record_or_a_wrong_type_is_broken_not_unavailable(rstore: RedisStore, raw: redis.Redis,
                                                                    batch_of: BatchOf) -> None:
    rstore.publish([batch_of(["a", "b", "c"])], model_version="m")
    raw.set("augury:v:1:a", b"\xc1 not msgpack")
    raw.set("augury:v:1:b", b"\x91\x01")  # a record of another layout (one field)
    raw.delete("augury:v:1:c")
    raw.hset("augury:v:1:c", "x", "y")  # a hash where a string should be
    for key in ("a", "b", "c"):
        with pytest.raises(StoreBroken, match=r"corrupt record|WRONGTYPE"):
            rstore.get_many([key])


def test_rediss_with_tls(tmp_path: Path, batch_of: BatchOf) -> None:
    """A TLS-only redis-server with a self-signed certificate: publish and read back over rediss://."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not on PATH (the TLS test makes its certificate with it)", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    tls_port = free_port()
    server = RedisServer(redis_server_binary(), extra=(
        "--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"))
    server.start()
    url = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={cert}"
    try:
        store = open_store(url)
        info = store.publish([batch_of([f"k{i}" for i in range(3_000)])], model_version="tls")
        assert info.row_count == 3_000
        reader = open_store(url, create=False)
        assert [r.model_version for r in reader.get_many(["k7", "k2999"]) if r] == ["tls", "tls"]
        store.close()
        reader.close()
        untrusted = open_store(f"rediss://127.0.0.1:{tls_port}/0")  # the self-signed certificate is refused
        with pytest.raises(StoreBroken, match="certificate"):
            untrusted.versions()
        untrusted.close()
    finally:
        server.close()
