"""The observer hook: every prediction route hands its examples and answers to the observers, off the
request's path; a slow observer loses samples (counted), never requests."""

from __future__ import annotations

import json
import logging
import re
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch
from augury.errors import ConfigError
from augury.models import Model, load_model, predict_checked
from augury.monitor.tap import Observation
from augury.publish import publish_predictions
from augury.serve import ServeSettings, create_app
from augury.store import SQLiteStore
from augury.verify import load_checks

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


def _monitor_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    return str(path)


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[dict[str, float]]:
    """`n` rows drawn as the reference's features are (`make_features`), f0 moved by `shift`."""
    x = rng.normal(size=(n, 4))
    x[:, 0] += shift
    return [{f"f{j}": float(v) for j, v in enumerate(row)} for row in x]


def _gauge(metrics: str, name: str, **labels: str) -> float | None:
    """The value of sample `name` with exactly `labels` (in any order) in a scrape, or None."""
    for found, value in re.findall(rf"^{name}\{{(.*)\}} (\S+)$", metrics, re.MULTILINE):
        if dict(re.findall(r'(\w+)="([^"]*)"', found)) == labels:
            return float(value)
    return None


def _windows(metrics: str, source: str = "dynamic") -> float:
    return _sample(metrics, f'augury_drift_windows_total{{source="{source}"}}')


def _firing(metrics: str) -> dict[str, float]:
    """``alert kind source column`` -> 0/1 for every alert state in a scrape."""
    found = {}
    for labels, value in re.findall(r"^augury_alert_firing\{(.*)\} (\S+)$", metrics, re.MULTILINE):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found[" ".join(named[k] for k in ("alert", "kind", "source", "column"))] = float(value)
    return found


def test_a_shifted_feature_fires_its_drift_alert_and_reference_traffic_none(
        client: httpx.Client, hgb: Model, features_parquet: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Windows of 10 requests of 50 rows (500 rows): 30 windows of traffic drawn like the reference raise no
    alert; then f0 moved by one standard deviation fires f0's alert (input, dynamic) in the first window
    made of shifted traffic, and no other feature's; back to the reference, it resolves."""
    config = _monitor_toml(tmp_path, "[window]\nrequests = 10\nseconds = 3600\nmin_rows = 200\n")
    app = create_app(ServeSettings(reference=str(features_parquet), monitor_config=config), hgb, None)
    rng = np.random.default_rng(5)
    url_path = "/v1/models/hgb:predict"

    def send(requests: int, shift: float = 0.0) -> None:
        for _ in range(requests):
            r = client.post(f"{server.url}{url_path}", json={"instances": _rows(rng, 50, shift)})
            assert r.status_code == 200

    def windows_past(n: float) -> str | None:
        text = client.get(f"{server.url}/metrics").text
        return text if _windows(text) >= n else None

    with caplog.at_level(logging.INFO, logger="augury.monitor.alerts"), LiveServer(app) as server:
        for window in range(1, 31):  # one window at a time: each is made of its own traffic only
            send(10)
            quiet = until(lambda n=window: windows_past(n))  # type: ignore[misc]
        assert not any(v for v in _firing(quiet).values())
        f0 = {"kind": "input", "source": "dynamic", "column": "f0"}
        assert (_gauge(quiet, "augury_drift_psi", **f0) or 1.0) < 0.2
        send(10, shift=1.0)
        shifted = until(lambda: windows_past(31))
        firing = {k for k, v in _firing(shifted).items() if v}
        assert "drift input dynamic f0" in firing
        assert not {f"drift input dynamic f{j}" for j in (1, 2, 3)} & firing
        assert (_gauge(shifted, "augury_drift_psi", **f0) or 0.0) > 0.2
        send(10)
        back = until(lambda: windows_past(32))
        assert _firing(back)["drift input dynamic f0"] == 0
    said = [json.loads(r.getMessage()) for r in caplog.records if r.name == "augury.monitor.alerts"]
    f0 = [s for s in said if s.get("column") == "f0" and s["kind"] == "input"]
    assert [s["state"] for s in f0] == ["firing", "resolved"]
    assert f0[0]["value"] > f0[0]["limit"] == 0.2 and "f0" in f0[0]["message"]


def test_the_staleness_alert_fires_past_the_limit_and_resolves_with_a_new_version(
        client: httpx.Client, sqlite_store: SQLiteStore, caplog: pytest.LogCaptureFixture) -> None:
    publish_values(sqlite_store, ["k1"], [1.0])
    app = create_app(ServeSettings(max_staleness_s=2.0, name="catalogue"), None, sqlite_store)

    def staleness(firing: float) -> str | None:
        text = client.get(f"{server.url}/metrics").text
        return text if _gauge(text, "augury_alert_firing", alert="staleness", kind="", source="",
                              column="") == firing else None

    with caplog.at_level(logging.INFO, logger="augury.monitor.alerts"), LiveServer(app) as server:
        fresh = until(lambda: staleness(0.0))
        assert _sample(fresh, "augury_store_max_staleness_seconds") == 2.0
        assert _sample(fresh, "augury_store_version_age_seconds") < 2.0
        stale = until(lambda: staleness(1.0), timeout_s=10)
        assert _sample(stale, "augury_store_version_age_seconds") > 2.0
        assert client.get(f"{server.url}/v1/models/catalogue/predictions/k1").status_code == 200  # (served)
        publish_values(sqlite_store, ["k1"], [2.0])
        until(lambda: staleness(0.0), timeout_s=1.9)  # (before the new version is stale in its turn)
    said = [json.loads(r.getMessage()) for r in caplog.records if r.name == "augury.monitor.alerts"]
    assert [s["state"] for s in said if s["alert"] == "staleness"] == ["firing", "resolved"]
    assert "--max-staleness" in said[0]["message"] and said[0]["value"] > said[0]["limit"] == 2.0


def test_max_staleness_needs_a_store() -> None:
    with pytest.raises(ConfigError, match="give --store"):
        create_app(ServeSettings(max_staleness_s=60.0), add_model(), None)


def test_a_retrained_model_behind_a_stale_store_shows_the_true_disagreement(
        client: httpx.Client, hgb_model: Path, tmp_path: Path) -> None:
    """The store holds model A's predictions of 600 rows; the hybrid server's model B was trained on
    another target. Every static answer is checked (share 1, one window of 600): the disagreement the
    server measures is the share of those rows whose label A and B give differently, computed offline,
    and the mean probability shift likewise; past 5% the shadow alert fires."""
    import joblib
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(8)
    x = rng.normal(size=(400, 4))
    retrained = tmp_path / "b" / "hgb.joblib"  # (the same name, "hgb": another version of the model)
    retrained.parent.mkdir()
    joblib.dump(HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(
        x, (x[:, 0] + 0.5 * x[:, 3] > 0).astype(int)), retrained)
    rows = np.random.default_rng(9).normal(size=(600, 4))
    catalogue = pa.table({f"f{j}": rows[:, j] for j in range(4)})
    pq.write_table(catalogue, tmp_path / "catalogue.parquet")
    run_batch(str(hgb_model), tmp_path / "catalogue.parquet", tmp_path / "preds.parquet",
              BatchOptions(workers=1))
    old, new = load_model(hgb_model, threads=1), load_model(retrained, threads=1)
    a = predict_checked(old, catalogue.to_batches()[0])
    b = predict_checked(new, catalogue.to_batches()[0])
    true_rate = float(np.mean(np.asarray(a.column("label")) != np.asarray(b.column("label"))))
    true_shift = float(np.mean(np.abs(np.asarray(a.column("proba_1")) - np.asarray(b.column("proba_1")))))
    assert 0.1 < true_rate < 0.6  # (the two models do differ, on a good share of rows)
    config = _monitor_toml(tmp_path, "[shadow]\nshare = 1.0\nmin_rows = 600\nmax_disagreement = 0.05\n")
    store = SQLiteStore(tmp_path / "preds.db")
    try:
        publish_predictions(tmp_path / "preds.parquet", store, load_checks(None))
        app = create_app(ServeSettings(monitor_config=config), new, store)
        with LiveServer(app) as server:
            for start in range(0, 600, 50):
                instances = [{f"f{j}": float(v) for j, v in enumerate(row)}
                             for row in rows[start:start + 50]]
                r = client.post(f"{server.url}/v1/models/hgb:predict", json={"instances": instances})
                assert r.headers["x-augury-source"] == "static=50,dynamic=0"  # (answered from A's store)

            def checked() -> str | None:
                text = client.get(f"{server.url}/metrics").text
                return text if _sample(text, "augury_shadow_checked_total") >= 600 else None

            metrics = until(checked)
    finally:
        store.close()
    assert _sample(metrics, "augury_shadow_disagreement") == pytest.approx(true_rate, abs=1e-12)
    assert _sample(metrics, "augury_shadow_shift") == pytest.approx(true_shift, rel=1e-9)  # (proba_0 too)
    assert _gauge(metrics, "augury_alert_firing", alert="shadow", kind="", source="", column="") == 1.0


def test_a_webhook_receiver_gets_the_servers_alert(client: httpx.Client, sqlite_store: SQLiteStore) -> None:
    from .test_webhook import Receiver

    receiver = Receiver()
    receiver.thread.start()
    try:
        publish_values(sqlite_store, ["k1"], [1.0])
        settings = ServeSettings(max_staleness_s=0.5, alert_webhook=receiver.url, name="catalogue")
        with LiveServer(create_app(settings, None, sqlite_store)):
            until(lambda: receiver.bodies)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    assert receiver.bodies[0]["alert"] == "staleness" and receiver.bodies[0]["state"] == "firing"


@pytest.mark.slow
def test_augury_serve_logs_alerts_as_json_lines(hgb_model: Path, features_parquet: Path,
                                                tmp_path: Path) -> None:
    """The command line end to end: --reference, --monitor-config and --log-format json; shifted traffic
    gives a drift alert whose log line is one JSON object with the alert's fields."""
    from .test_run import augury_serve

    config = _monitor_toml(tmp_path, "[window]\nrequests = 4\nmin_rows = 100\n")
    rng = np.random.default_rng(3)
    with augury_serve("--model", str(hgb_model), "--reference", str(features_parquet), "--monitor-config",
                      config, "--log-format", "json") as (url, proc):
        for _ in range(8):
            r = httpx.post(f"{url}/v1/models/hgb:predict", json={"instances": _rows(rng, 50, shift=2.0)})
            assert r.status_code == 200
        until(lambda: _windows(httpx.get(f"{url}/metrics").text) >= 1)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=30)[0]
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger"} <= set(line) for line in lines)
    drift = [line for line in lines if line.get("alert") == "drift" and line.get("column") == "f0"]
    assert drift and drift[0]["level"] == "WARNING" and drift[0]["logger"] == "augury.monitor.alerts"
    assert drift[0]["state"] == "firing" and drift[0]["kind"] == "input" and drift[0]["value"] > 0.2


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--reference", "/no/such/data.parquet", "reference data not found: /no/such/data.parquet"),
    ("--monitor-config", "BAD", "monitor settings in"),
    ("--max-staleness", "1d", "give --store"),
    ("--alert-webhook", "ftp://x", "must be an http:// or https:// URL"),
])
def test_bad_monitoring_options_are_one_line_and_exit_2(hgb_model: Path, tmp_path: Path, option: str,
                                                         value: str, message: str) -> None:
    import subprocess
    import sys

    if value == "BAD":
        value = _monitor_toml(tmp_path, "[window]\nrequests = 0\n")
    out = subprocess.run([sys.executable, "-m", "augury.cli", "serve", "--model", str(hgb_model), "--port",
                          "0", option, value], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
