"""Serving from a Redis store (a real redis-server on a free loopback port): static, hybrid and many
servers on one store, and Redis stopped and restarted under load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from augury.store.redis_store import RedisStore
from redis_server import RedisServer

from .helpers import add_model, live, publish_values

KEYS = [f"k{i}" for i in range(50)]


def fast_failing_store(url: str) -> RedisStore:
    """A store that gives up quickly on a stopped Redis (so a request under the fault is not slow)."""
    return RedisStore(url, socket_timeout_s=0.5, connect_timeout_s=0.5, pool_timeout_s=0.5, poll_s=0.2)


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


def test_static_and_hybrid_answers_from_redis(client: httpx.Client, redis_url: str) -> None:
    publisher = RedisStore(redis_url)
    publish_values(publisher, KEYS, [float(i) for i in range(50)])
    static_store, hybrid_store = RedisStore(redis_url), RedisStore(redis_url)
    try:
        with live(None, static_store, name="add") as static, live(add_model(), hybrid_store) as hybrid:
            r = client.get(f"{static}/v1/models/add/predictions/k7")
            assert r.status_code == 200 and r.json()["prediction"] == {"value": 7.0}
            assert r.json()["provenance"]["source"] == "static"
            assert r.json()["provenance"]["store_version"] == "1"
            assert client.get(f"{static}/v1/models/add/predictions/nope").status_code == 404
            r = client.post(f"{hybrid}/v1/models/add:predict",
                            json={"instances": [{"key": "k3"}, {"a": 100.0, "b": 1.0}]})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"] == [{"value": 3.0}, {"value": 101.0}]
            assert [p["source"] for p in r.json()["provenance"]] == ["static", "dynamic"]
            infer = client.post(f"{static}/v2/models/add/infer", json={"inputs": [
                {"name": "key", "shape": [2], "datatype": "BYTES", "data": ["k4", "k5"]}]})
            assert infer.status_code == 200, infer.text
            assert infer.json()["outputs"][0]["data"] == [4.0, 5.0]
            meta = client.get(f"{static}/v2/models/add")
            assert meta.status_code == 200 and [o["name"] for o in meta.json()["outputs"]] == ["value"]
            assert client.get(f"{static}/v2/models/add/ready").status_code == 200
            big = client.post(f"{static}/v1/models/add:predict",
                              json={"instances": [{"key": k} for k in KEYS * 3]})
            assert [p["value"] for p in big.json()["predictions"]] == [float(i) for i in range(50)] * 3
    finally:
        for s in (publisher, static_store, hybrid_store):
            s.close()


def test_two_servers_switch_to_a_new_version_within_a_second(client: httpx.Client, redis_url: str) -> None:
    publisher = RedisStore(redis_url)
    publish_values(publisher, KEYS, [1.0] * 50)
    stores = [RedisStore(redis_url), RedisStore(redis_url)]
    try:
        with live(None, stores[0], name="add") as one, live(None, stores[1], name="add") as two:
            def value(url: str) -> object:
                return client.get(f"{url}/v1/models/add/predictions/k1").json()["prediction"]

            for url in (one, two):
                assert value(url) == {"value": 1.0}
            publish_values(publisher, KEYS, [2.0] * 50)
            published = time.monotonic()
            for url in (one, two):
                while value(url) != {"value": 2.0}:
                    assert time.monotonic() - published < 1.0, "a server did not switch within 1 s"
                    time.sleep(0.01)
    finally:
        for s in (publisher, *stores):
            s.close()


def test_redis_stopped_and_restarted_under_load(client: httpx.Client, redis_server: RedisServer,
                                                redis_url: str) -> None:
    """Hybrid answers every request by computing while Redis is down (counted, `source: dynamic`); static
    answers 503 with Retry-After; no other 5xx and no wrong answer; both recover without a restart. (Redis
    comes back empty, as it keeps nothing here: until the catalogue is published again a static lookup is a
    404, a miss, and nothing else.)"""
    publisher = RedisStore(redis_url)
    publish_values(publisher, KEYS, [float(i) for i in range(50)])  # k<i> holds a + b of a = i, b = 0
    publisher.close()
    static_store, hybrid_store = fast_failing_store(redis_url), fast_failing_store(redis_url)
    statuses: Counter[tuple[str, int, str]] = Counter()
    phase = ["up"]
    wrong: list[str] = []
    stop = threading.Event()

    def load(static: str, hybrid: str) -> None:
        with httpx.Client(timeout=30) as c:
            i = 0
            while not stop.is_set():
                i += 1
                k = i % 50
                r = c.post(f"{hybrid}/v1/models/add:predict",
                           json={"instances": [{"key": f"k{k}", "a": float(k), "b": 0.0}]})
                source = r.json()["provenance"][0]["source"] if r.status_code == 200 else ""
                statuses["hybrid", r.status_code, source] += 1
                if r.status_code == 200 and r.json()["predictions"] != [{"value": float(k)}]:
                    wrong.append(r.text)
                r = c.get(f"{static}/v1/models/add/predictions/k{k}")
                statuses["static", r.status_code, ""] += 1
                if r.status_code == 404 and phase[0] != "restarted":
                    wrong.append(f"404 while the catalogue was published: {r.text}")
                if r.status_code == 200 and r.json()["prediction"] != {"value": float(k)}:
                    wrong.append(r.text)
                if r.status_code == 503 and "retry-after" not in r.headers:
                    wrong.append(f"503 without Retry-After: {r.text}")

    try:
        with live(None, static_store, name="add") as static, live(add_model(), hybrid_store) as hybrid:
            threads = [threading.Thread(target=load, args=(static, hybrid)) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            redis_server.stop()
            time.sleep(1.5)
            down = Counter(statuses)
            phase[0] = "restarted"
            redis_server.start()  # same port, empty (no persistence): publish again, as a nightly job would
            republisher = RedisStore(redis_url)
            publish_values(republisher, KEYS, [float(i) for i in range(50)])
            republisher.close()
            deadline = time.monotonic() + 10
            while client.get(f"{static}/v1/models/add/predictions/k1").status_code != 200:
                assert time.monotonic() < deadline, "the static server did not recover"
                time.sleep(0.05)
            time.sleep(0.2)  # (requests sent before the switch may still come back)
            phase[0] = "up"
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(30)
            r = client.post(f"{hybrid}/v1/models/add:predict", json={"instances": [{"key": "k2"}]})
            assert r.status_code == 200 and r.json()["provenance"][0]["source"] == "static"
            metrics = client.get(f"{hybrid}/metrics").text
    finally:
        stop.set()
        static_store.close()
        hybrid_store.close()
        if redis_server.proc is None:
            redis_server.start()
    assert not wrong, wrong[:3]
    assert {status for (_, status, _) in statuses} <= {200, 404, 503}, statuses
    assert not any(mode == "hybrid" and status != 200 for (mode, status, _) in statuses), statuses
    assert down["static", 503, ""] > 0 and down["hybrid", 200, "dynamic"] > 0, down  # the fault was met
    assert statuses["static", 200, ""] > down["static", 200, ""]  # and recovered from
    errors = [line for line in metrics.splitlines() if line.startswith("augury_store_errors_total ")]
    assert errors and float(errors[0].split()[1]) > 0
