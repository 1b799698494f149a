"""`augury serve` as a user runs it: a subprocess, real files, several worker processes, a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from augury.errors import ConfigError
from augury.serve.settings import LaunchConfig, ServeSettings
from augury.store import SQLiteStore

from .helpers import publish_values

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _augury(*blocked: str) -> list[str]:
    """The command line of `augury`, with the modules `blocked` made impossible to import (as if their
    packages were not installed)."""
    if not blocked:
        return [sys.executable, "-m", "augury.cli"]
    return [sys.executable, "-c", f"import sys; sys.modules.update(dict.fromkeys({list(blocked)!r})); "
            "sys.argv[0] = 'augury'; from augury.cli import main; sys.exit(main())"]


@contextmanager
def augury_serve(*args: str, blocked: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = _free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([*_augury(*blocked), "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "augury serve did not become ready in 60 s"
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None and not proc.stdout.closed:
            proc.stdout.close()


def test_serve_hybrid_with_two_workers(hgb_model: Path, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "preds.db")
    store.publish([pa.record_batch({"key": ["item-1"], "computed_at": [time.time()], "label": [1],
                                    "proba_0": [0.25], "proba_1": [0.75]})], model_version="m0")
    store.close()
    with augury_serve("--model", str(hgb_model), "--store", f"sqlite:///{tmp_path / 'preds.db'}",
                      "--workers", "2", "--name", "churn") as (url, proc):
        with httpx.Client(timeout=30) as c:
            for _ in range(10):  # spread over both workers
                r = c.post(f"{url}/v1/models/churn:predict",
                           json={"instances": [{"key": "item-1"}, {"f0": 1, "f1": 2, "f2": 3, "f3": 4}]})
                assert r.status_code == 200, r.text
                assert r.headers["x-augury-source"] == "static=1,dynamic=1"
            assert c.get(f"{url}/v2/models/churn").json()["parameters"]["mode"] == "hybrid"
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert "serving (hybrid mode) on http://127.0.0.1" in output


def test_two_workers_report_the_servers_totals_on_metrics(hgb_model: Path) -> None:
    with augury_serve("--model", str(hgb_model), "--workers", "2", "--name", "churn") as (url, _):
        for _ in range(24):  # a new connection each: the kernel spreads them over the workers
            with httpx.Client(timeout=30) as c:
                r = c.post(f"{url}/v1/models/churn:predict", json={"instances": [{"f0": 1, "f1": 2, "f2": 3,
                                                                                  "f3": 4}]})
                assert r.status_code == 200, r.text
        time.sleep(1.5)  # every worker has shared its counts since
        sample = 'augury_requests_total{method="POST",route="/v1/models/{name}:predict",status="200"} '
        for _ in range(6):  # whichever worker answers the scrape
            with httpx.Client(timeout=30) as c:
                text = c.get(f"{url}/metrics").text
            assert f"{sample}24.0" in text, [line for line in text.splitlines() if sample in line]
            assert "augury_predictions_total{source=\"dynamic\"} 24.0" in text


def test_serve_static_binds_localhost_by_default(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "preds.db")
    publish_values(store, ["a"], [1.0])
    store.close()
    with augury_serve("--store", f"sqlite:///{tmp_path / 'preds.db'}", "--name", "cat") as (url, _):
        r = httpx.get(f"{url}/v1/models/cat/predictions/a")
        assert r.status_code == 200 and r.json()["provenance"]["source"] == "static"
        connections = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        port = url.rsplit(":", 1)[1]
        listening = [line for line in connections.splitlines() if f":{port} " in line]
        assert listening and all("127.0.0.1:" in line for line in listening), listening


@pytest.mark.parametrize(("args", "message"), [
    ((), "give a model (--model), a prediction store (--store), or both"),
    (("--model", "nowhere.joblib"), "does not exist"),
    (("--store", "redis://127.0.0.1:1/0"), "prediction store redis://127.0.0.1:1/0 cannot be reached"),
    (("--model", "nowhere.joblib", "--write-back-ttl", "soon"), "use a number and a unit"),
    (("--model", "nowhere.joblib", "--write-back-ttl", "1m", "--write-back-to", "store"), "needs a store"),
    (("--model", "nowhere.joblib", "--write-back-to", "process"), "give --write-back-ttl too"),
    (("--model", "m.joblib", "--write-back-ttl", "1m", "--write-back-to", "disk"), "'disk' is not one of"),
])
def test_serve_errors_exit_2_with_a_message(args: tuple[str, ...], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "augury.cli", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_launch_config_round_trips_through_the_environment() -> None:
    config = LaunchConfig("m.joblib", "sqlite:///x.db", "0.0.0.0", 9000, 3, "debug",
                          ServeSettings(name="m", max_batch_size=8, write_back_ttl_s=60.0,
                                        write_back_to="store"))
    assert LaunchConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError):
        LaunchConfig.from_json('{"model_ref": 1}')
    with pytest.raises(ConfigError):
        ServeSettings(max_queue=0)
    with pytest.raises(ConfigError, match="'store' or 'process'"):
        ServeSettings(write_back_ttl_s=1.0, write_back_to="disk")


def test_serve_without_httptools_runs_on_h11(hgb_model: Path) -> None:
    """Without httptools augury's protocol is not used and uvicorn's h11 serves the same answers."""
    rows = {"instances": [{f"f{i}": 0.5 for i in range(4)}]}
    answers = []
    for blocked in ((), ("httptools",)):
        with augury_serve("--model", str(hgb_model), blocked=blocked) as (url, _):
            r = httpx.post(f"{url}/v1/models/{hgb_model.stem}:predict", json=rows, timeout=10)
            assert r.status_code == 200, r.text
            answers.append(r.json()["predictions"])
    assert answers[0] == answers[1]


def test_serve_without_the_serve_extra_says_which_to_install(hgb_model: Path) -> None:
    proc = subprocess.run([*_augury("starlette"), "serve", "--model", str(hgb_model)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "pip install 'augury[serve]'" in proc.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_line_and_nothing_says_serving(hgb_model: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = subprocess.run([sys.executable, "-m", "augury.cli", "serve", "--model", str(hgb_model),
                               "--port", port, "--workers", workers],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"augury: cannot serve on 127.0.0.1:{port}: the port is in use"


def test_several_workers_refuse_another_models_store_before_starting(tmp_path: Path) -> None:
    """The start-up check runs in the launching process too: one line, no worker started."""
    store_path = tmp_path / "preds.db"
    store = SQLiteStore(str(store_path))
    batch = pa.record_batch({"key": ["k1"], "computed_at": [time.time()], "value": [1.0]})
    store.publish([batch], model_version="1", meta={"model": "churn"})
    store.close()
    proc = subprocess.run([sys.executable, "-m", "augury.cli", "serve", "--store", f"sqlite:///{store_path}",
                           "--name", "notthere", "--workers", "2", "--port", str(_free_port())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "notthere" in proc.stderr and "churn" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_applies_its_connection_time_limits(hgb_model: Path, workers: str) -> None:
    """--header-timeout, --keep-alive-timeout and --probe-port reach the connections of every worker
    process (the probe port answers the probes and /metrics, 404 to anything else)."""
    probes = _free_port()
    with augury_serve("--model", str(hgb_model), "--workers", workers, "--header-timeout", "500ms",
                      "--keep-alive-timeout", "1s", "--probe-port", str(probes)) as (url, _):
        for _ in range(4):  # new connections, so with 2 workers both are likely to answer some
            assert httpx.get(f"http://127.0.0.1:{probes}/v2/health/ready").json() == {"ready": True}
        assert "augury_requests_total" in httpx.get(f"http://127.0.0.1:{probes}/metrics").text
        r = httpx.post(f"http://127.0.0.1:{probes}/v1/models/hgb:predict", json={"instances": []})
        assert r.status_code == 404 and "only /v2/health/" in r.json()["error"]
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n")  # the head never ends
            started, raw = time.monotonic(), b""
            while chunk := sock.recv(65536):
                raw += chunk
        assert raw.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            started = time.monotonic()
            assert sock.recv(65536) == b""  # a silent connection: closed after the keep-alive limit
            assert 0.5 < time.monotonic() - started < 5


def test_bad_time_limits_are_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "augury.cli", "serve", "--model", "m.joblib",
                           "--header-timeout", "10"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--header-timeout" in proc.stderr and "Traceback" not in proc.stderr
