"""The observer hook: every prediction route hands its examples and answers to the observers, off the
request's path; a slow observer loses samples (counted), never requests."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from augury.monitor.tap import Observation
from augury.serve import ServeSettings, create_app
from augury.store import SQLiteStore

from .helpers import LiveServer, add_model, publish_values, until


class Recorder:
    """Keeps every observation it is given."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.seen: list[Observation] = []
        self.calls = 0
        self.sleep_s = sleep_s
        self.threads: set[str] = set()

    def observe(self, observations: Sequence[Observation]) -> None:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        if observations and self.sleep_s:
            time.sleep(self.sleep_s)
        self.seen.extend(observations)


def _sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_every_prediction_route_reaches_the_observers(client: httpx.Client,
                                                      sqlite_store: SQLiteStore) -> None:
    version = publish_values(sqlite_store, ["k1"], [42.0])
    recorder = Recorder()
    app = create_app(ServeSettings(), add_model(), sqlite_store, observers=[recorder])
    with LiveServer(app) as server:
        url = server.url
        rows = [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
        r1 = client.post(f"{url}/v1/models/add:predict", json={"instances": rows})
        r2 = client.post(f"{url}/v2/models/add/infer", json={"inputs": [
            {"name": "a", "datatype": "FP64", "shape": [1], "data": [5.0]},
            {"name": "b", "datatype": "FP64", "shape": [1], "data": [6.0]}]})
        r3 = client.get(f"{url}/v1/models/add/predictions/k1")
        assert [r.status_code for r in (r1, r2, r3)] == [200, 200, 200]
        until(lambda: len(recorder.seen) >= 3)
        metrics = client.get(f"{url}/metrics").text
    v1, v2, lookup = recorder.seen
    assert [list(ex.row or ()) for ex in v1.examples] == [[1.0, 2.0], [3.0, 4.0]]
    assert [a.values["value"] for a in v1.answers if a is not None] == [3.0, 7.0]
    assert {a.provenance["source"] for a in v1.answers if a is not None} == {"dynamic"}
    assert [list(ex.row or ()) for ex in v2.examples] == [[5.0, 6.0]]
    assert v2.answers[0] is not None and v2.answers[0].values["value"] == 11.0
    assert lookup.examples[0].key == "k1" and lookup.examples[0].row is None
    assert lookup.answers[0] is not None and lookup.answers[0].provenance["source"] == "static"
    assert lookup.answers[0].provenance["store_version"] == version
    assert recorder.threads == {"augury-monitor"}  # never the event loop's thread
    assert _sample(metrics, 'augury_monitor_samples_total{result="queued"}') == 3


def test_a_slow_observer_drops_samples_and_counts_them(client: httpx.Client) -> None:
    recorder = Recorder(sleep_s=0.5)
    app = create_app(ServeSettings(monitor_queue=4), add_model(), None, observers=[recorder])
    body: dict[str, Any] = {"instances": [{"a": 1, "b": 2}]}
    with LiveServer(app) as server:
        answered = [client.post(f"{server.url}/v1/models/add:predict", json=body).status_code
                    for _ in range(60)]
        metrics = client.get(f"{server.url}/metrics").text
    assert answered == [200] * 60  # every request answered, whatever the observer's pace
    queued = _sample(metrics, 'augury_monitor_samples_total{result="queued"}')
    dropped = _sample(metrics, 'augury_monitor_samples_total{result="dropped"}')
    assert queued + dropped == 60
    assert dropped > 0
    assert len(recorder.seen) == queued  # what was queued was observed, by the time the server stopped


def test_sampling_offers_a_share_of_requests(client: httpx.Client) -> None:
    recorder = Recorder()
    app = create_app(ServeSettings(monitor_sample=0.25), add_model(), None, observers=[recorder])
    with LiveServer(app) as server:
        for _ in range(40):
            client.post(f"{server.url}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 2}]})
        until(lambda: len(recorder.seen) >= 10)
        metrics = client.get(f"{server.url}/metrics").text
    assert _sample(metrics, 'augury_monitor_samples_total{result="queued"}') == 10
    time.sleep(0.1)
    assert len(recorder.seen) == 10


def test_no_observers_no_tap(client: httpx.Client) -> None:
    app = create_app(ServeSettings(), add_model(), None)
    assert app.state.service.tap is None
