"""Request ids, Prometheus metrics and the structured request log, on a live hybrid server."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from augury.store import SQLiteStore

from .helpers import add_model, live, publish_values


def _value(metrics: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", metrics, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_metrics_are_exposed_with_help_and_counts(client: httpx.Client, sqlite_store: SQLiteStore) -> None:
    publish_values(sqlite_store, ["k1", "k2"], [1.0, 2.0])
    with live(add_model(), sqlite_store) as url:
        predict = f"{url}/v1/models/add:predict"
        r = client.post(predict, json={"instances": [{"key": "k1"}, {"key": "k2"}, {"a": 1, "b": 2}]})
        assert r.status_code == 200
        assert client.post(predict, json={"instances": [{"a": "x", "b": 2}]}).status_code == 400
        assert client.get(f"{url}/v1/models/add/predictions/k1").status_code == 200
        response = client.get(f"{url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("augury_requests_total", "augury_request_errors_total", "augury_request_duration_seconds",
                 "augury_prediction_duration_seconds", "augury_store_lookups_total", "augury_batch_rows",
                 "augury_queue_depth", "augury_queue_wait_seconds", "augury_shed_requests_total",
                 "augury_model_inference_seconds", "augury_store_version_age_seconds",
                 "augury_deadline_exceeded_total", "augury_requests_in_flight", "augury_batch_requests"):
        assert f"# HELP {name.removesuffix('_total')}" in text, name
    route = 'route="/v1/models/{name}:predict"'
    assert _value(text, f'augury_requests_total{{method="POST",{route},status="200"}}') == 1
    assert _value(text, 'augury_request_errors_total{error="SchemaError",route="/v1/models/{name}:predict",'
                        'status="400"}') == 1
    assert _value(text, 'augury_store_lookups_total{result="hit"}') == 3
    assert _value(text, 'augury_store_lookups_total{result="miss"}') == 1
    assert _value(text, 'augury_predictions_total{source="static"}') == 3
    assert _value(text, 'augury_predictions_total{source="dynamic"}') == 1
    assert _value(text, 'augury_prediction_duration_seconds_count{source="mixed"}') == 1
    assert _value(text, "augury_batch_rows_count") == 1  # the warm-up call is not counted
    assert _value(text, "augury_store_active_version") == 1
    assert 0 <= _value(text, "augury_store_version_age_seconds") < 60
    assert _value(text, "augury_queue_depth") == 0
    assert _value(text, 'augury_model_info{mode="hybrid",name="add",version="1"}') == 1


def test_request_ids_are_echoed_or_generated(client: httpx.Client) -> None:
    with live(add_model()) as url:
        echoed = client.get(f"{url}/v2/health/live", headers={"x-request-id": "abc-1"})
        assert echoed.headers["x-request-id"] == "abc-1"
        generated = client.get(f"{url}/v2/health/live").headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        unsafe = client.get(f"{url}/v2/health/live", headers={"x-request-id": "a b"}).headers["x-request-id"]
        assert unsafe != "a b"
        assert client.get(f"{url}/nowhere").headers["x-request-id"]


def test_one_json_log_line_per_request(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with live(add_model()) as url, caplog.at_level(logging.DEBUG, logger="augury.serve.access"):
        client.post(f"{url}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 2}]},
                    headers={"x-request-id": "ok-1"})
        client.post(f"{url}/v1/models/add:predict", json={"instances": [{"a": 1}]},
                    headers={"x-request-id": "bad-1"})
    lines = {json.loads(r.getMessage())["request_id"]: (r.levelno, json.loads(r.getMessage()))
             for r in caplog.records if r.name == "augury.serve.access"}
    level, ok = lines["ok-1"]
    assert level == logging.DEBUG and ok["status"] == 200 and ok["route"] == "/v1/models/{name}:predict"
    assert ok["ms"] > 0
    level, bad = lines["bad-1"]
    assert level == logging.WARNING and bad["status"] == 400 and "missing feature 'b'" in bad["error"]


def test_error_lines_are_logged_without_debug(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with live(add_model()) as url, caplog.at_level(logging.INFO, logger="augury.serve.access"):
        client.post(f"{url}/v1/models/add:predict", json={"instances": [{"a": 1, "b": 2}]})
        client.post(f"{url}/v1/models/nope:predict", json={"instances": [{"a": 1, "b": 2}]})
    messages = [json.loads(r.getMessage()) for r in caplog.records if r.name == "augury.serve.access"]
    assert [m["status"] for m in messages] == [404]
