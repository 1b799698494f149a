"""Every kind of bad input gets a 4xx with {"error": ...} naming the problem, never a 500; overload gets
503 with Retry-After; a passed deadline gets 504."""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from augury.errors import (
    DeadlineExceeded,
    FeaturesChangedError,
    InputError,
    NotFoundError,
    OverloadedError,
    PredictionError,
    SchemaError,
    StoreBroken,
    StoreError,
    StoreUnavailable,
    VersionNotFoundError,
)
from augury.serve.errors import (
    INTERNAL_ERROR,
    STORE_UNAVAILABLE,
    BodyTooLarge,
    UnscorableError,
    headers_of,
    public_message,
    status_of,
)
from augury.store import SQLiteStore

from .helpers import add_model, live, publish_values

ADD = "/v1/models/add:predict"
INFER = "/v2/models/add/infer"


def _tensor(name: str, data: Any, datatype: str = "FP64", shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


GOOD_V2 = [_tensor("a", [1.0]), _tensor("b", [2.0])]
ONE = {"a": 1, "b": 2}
BINARY_HEADER = orjson.dumps({"inputs": [{"name": "a", "datatype": "FP64", "shape": [1],
                                           "parameters": {"binary_data_size": 80}}]})

CASES: list[tuple[str, str, Any, dict[str, str], int, str]] = [
    # (name, path, body (bytes, or JSON-able), headers, status, words the error must contain)
    ("malformed JSON", ADD, b'{"instances": [', {}, 400, "not valid JSON"),
    ("empty body", ADD, b"", {}, 400, "empty"),
    ("not an object", ADD, [1, 2], {}, 400, "JSON object"),
    ("no instances", ADD, {"rows": []}, {}, 400, "unknown top-level field"),
    ("instances not a list", ADD, {"instances": {"a": 1}}, {}, 400, '"instances"'),
    ("empty instances", ADD, {"instances": []}, {}, 400, "empty"),
    ("instance not an object", ADD, {"instances": [[1, 2]]}, {}, 400, "instance 0"),
    ("missing feature", ADD, {"instances": [{"a": 1}]}, {}, 400, "missing feature 'b'"),
    ("unknown field", ADD, {"instances": [{"a": 1, "b": 2, "c": 3}]}, {}, 400, "unknown field(s): c"),
    ("uncastable value", ADD, {"instances": [{"a": "abc", "b": 2}]}, {}, 400, "cannot read 'abc' as float64"),
    ("bool for a float", ADD, {"instances": [{"a": True, "b": 2}]}, {}, 400, "feature 'a'"),
    ("NaN literal", ADD, b'{"instances": [{"a": NaN, "b": 1}]}', {}, 400, "'a' is NaN"),
    ("NaN as text", ADD, {"instances": [{"a": 1, "b": "nan"}]}, {}, 400, "'b' is NaN"),
    ("null", ADD, {"instances": [{"a": None, "b": 1}]}, {}, 400, "'a' is missing"),
    ("huge integer", ADD, b'{"instances": [{"a": 1' + b"0" * 400 + b', "b": 1}]}', {}, 400, "feature 'a'"),
    ("lone surrogate", ADD, b'{"instances": [{"key": "\\ud800"}]}', {}, 400, "lone UTF-16 surrogate"),
    ("deep nesting", ADD, b"[" * 2000 + b"]" * 2000, {}, 400, "nested too deeply"),
    ("bad key", ADD, {"instances": [{"key": {"id": 1}}]}, {}, 400, "'key' must be"),
    ("key-only miss", ADD, {"instances": [{"key": "nope"}]}, {}, 404, "never precomputed"),
    ("unknown model", "/v1/models/other:predict", {"instances": [ONE]}, {}, 404, "unknown model"),
    ("too many instances", ADD, {"instances": [{"a": 1, "b": 2}] * 11}, {}, 413, "--max-instances"),
    ("body too large", ADD, {"instances": [{**ONE, "pad": "x" * 5000}]}, {}, 413, "--max-body-bytes"),
    ("model refuses a row", ADD, {"instances": [ONE, {"a": -1e7, "b": 1}]}, {}, 422, "instance 1"),
    ("bad deadline", ADD, {"instances": [ONE]}, {"x-augury-deadline-ms": "soon"}, 400, "Deadline"),
    ("zero deadline", ADD, {"instances": [ONE]}, {"x-augury-deadline-ms": "0"}, 400, "more than 0"),
    ("unknown encoding", ADD, {"instances": [{"a": 1, "b": 2}]}, {"content-encoding": "br"}, 415, "br"),
    ("bad gzip", ADD, b"not gzip", {"content-encoding": "gzip"}, 400, "gzip"),
    ("v2 malformed JSON", INFER, b"{", {}, 400, "not valid JSON"),
    ("v2 no inputs", INFER, {"inputs": []}, {}, 400, '"inputs"'),
    ("v2 wrong datatype", INFER, {"inputs": [_tensor("a", ["1"], "BYTES"), GOOD_V2[1]]}, {}, 400,
     "datatype BYTES does not fit"),
    ("v2 BOOL for a float feature", INFER, {"inputs": [_tensor("a", [True], "BOOL"), GOOD_V2[1]]}, {}, 400,
     "does not fit feature 'a' (float64); use FP64, FP32, FP16, INT64, INT32, INT16, INT8, UINT64, UINT32, "
     "UINT16 or UINT8"),
    ("v2 BOOL 2-D for float features", INFER, {"inputs": [_tensor("x", [True, False], "BOOL", [1, 2])]}, {},
     400, "datatype BOOL does not fit every input (a: float64, b: float64); use BYTES, FP64, FP32, FP16, "
     "INT64, INT32, INT16, INT8, UINT64, UINT32, UINT16 or UINT8"),
    ("v2 unknown datatype", INFER, {"inputs": [_tensor("a", [1], "FP128"), GOOD_V2[1]]}, {}, 400,
     "'datatype'"),
    ("v2 data not fitting datatype", INFER, {"inputs": [_tensor("a", ["x"]), GOOD_V2[1]]}, {}, 400,
     "datatype FP64 takes numbers"),
    ("v2 int out of range", INFER, {"inputs": [_tensor("a", [300], "UINT8"), GOOD_V2[1]]}, {}, 400,
     "integers from 0 to 255"),
    ("v2 wrong shape", INFER, {"inputs": [_tensor("a", [1, 2], shape=[1, 2]), GOOD_V2[1]]}, {}, 400,
     "[n] or [n, 1]"),
    ("v2 shape and data disagree", INFER, {"inputs": [_tensor("a", [1, 2], shape=[3]), GOOD_V2[1]]}, {}, 400,
     "holds 3 elements but 2"),
    ("v2 rows disagree", INFER, {"inputs": [_tensor("a", [1, 2]), GOOD_V2[1]]}, {}, 400, "disagree"),
    ("v2 missing tensor", INFER, {"inputs": [GOOD_V2[0]]}, {}, 400, "missing input tensor(s) 'b'"),
    ("v2 unknown tensor", INFER, {"inputs": [*GOOD_V2, _tensor("c", [1.0])]}, {}, 400,
     "unknown input tensor"),
    ("v2 duplicate tensor", INFER, {"inputs": [*GOOD_V2, GOOD_V2[0]]}, {}, 400, "given twice"),
    ("v2 bad 2-D tensor", INFER, {"inputs": [_tensor("x", [1, 2, 3], shape=[1, 3])]}, {}, 400, "[n, 2]"),
    ("v2 NaN in a tensor", INFER,
     b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [NaN]}, '
     b'{"name": "b", "datatype": "FP64", "shape": [1], "data": [1]}]}', {}, 400, "row 0: feature 'a' is NaN"),
    ("v2 unknown output", INFER, {"inputs": GOOD_V2, "outputs": [{"name": "proba"}]}, {}, 400,
     "unknown output"),
    ("v2 classification", INFER, {"inputs": GOOD_V2, "outputs": [{"name": "value", "parameters": {
        "classification": 2}}]}, {}, 400, "classification"),
    ("v2 binary size too big", INFER, BINARY_HEADER + b"\0" * 8,
     {"inference-header-content-length": str(len(BINARY_HEADER))}, 400, "binary_data_size"),
    ("v2 bad header length", INFER, {"inputs": GOOD_V2}, {"inference-header-content-length": "99999"}, 400,
     "Inference-Header-Content-Length"),
    ("v2 unknown version", "/v2/models/add/versions/9/infer", {"inputs": GOOD_V2}, {}, 404, "no version '9'"),
    ("v2 timeout parameter too long", INFER, {"inputs": GOOD_V2, "parameters": {"timeout": 10**14}}, {}, 400,
     "timeout"),
]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = SQLiteStore(tmp_path_factory.mktemp("errors") / "s.db")
    publish_values(store, ["k1"], [1.0])
    try:
        with live(add_model(), store, max_instances=10, max_body_bytes=4096) as base:
            yield base
    finally:
        store.close()


@pytest.mark.parametrize(("path", "body", "headers", "status", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_4xx_naming_the_problem(url: str, client: httpx.Client, path: str, body: Any,
                                                 headers: dict[str, str], status: int, words: str) -> None:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    r = client.post(url + path, content=content, headers={"content-type": "application/json", **headers})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]
    assert r.headers["x-request-id"]


def test_body_limit_is_checked_while_reading_a_chunked_body(url: str, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"instances": [{"a": 1, "b": 2, "pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    r = client.post(url + ADD, content=chunks())
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]


def test_gzip_body_is_read(url: str, client: httpx.Client) -> None:
    body = gzip.compress(orjson.dumps({"instances": [{"a": 1, "b": 2}]}))
    r = client.post(url + ADD, content=body, headers={"content-encoding": "gzip"})
    assert r.status_code == 200 and r.json()["predictions"] == [{"value": 3.0}]


def test_unknown_fields_can_be_ignored_and_deep_nesting_is_refused(client: httpx.Client) -> None:
    with live(add_model(), ignore_unknown_fields=True) as base:
        deep = client.post(base + ADD, content=b"[" * 200_000 + b"]" * 200_000)
        assert deep.status_code == 400 and "not valid JSON" in deep.json()["error"]
        r = client.post(base + ADD, json={"instances": [{"a": 1, "b": 2, "comment": "x"}]})
        assert r.status_code == 200 and r.json()["predictions"] == [{"value": 3.0}]
        v2 = client.post(base + INFER, json={"inputs": [*GOOD_V2, _tensor("comment", ["x"], "BYTES")]})
        assert v2.status_code == 200, v2.text


def test_unknown_route_and_method_are_json(url: str, client: httpx.Client) -> None:
    r = client.get(url + "/v3/nothing")
    assert r.status_code == 404 and "no route" in r.json()["error"]
    r = client.get(url + ADD)
    assert r.status_code in (404, 405) and "error" in r.json()
    r = client.delete(url + INFER)
    assert r.status_code == 405 and "not allowed" in r.json()["error"]


def test_a_key_only_instance_in_dynamic_mode_is_told_what_is_true(client: httpx.Client) -> None:
    """No store and no write-back: the error says so, not "not among the written-back predictions"."""
    with live(add_model()) as base:
        r = client.post(base + ADD, json={"instances": [ONE, {"key": "k1"}]})
    assert r.status_code == 404
    assert r.json()["error"] == ("instance 1: key 'k1' cannot be looked up: this server has no prediction "
                                 "store and no write-back (dynamic mode); send the example's features")


def test_get_on_predict_is_405_with_allow_as_put_is(url: str, client: httpx.Client) -> None:
    """Not a 404 "unknown model 'add:predict'" (the model status route `/v1/models/{name}` matched it)."""
    for method in ("GET", "PUT"):
        r = client.request(method, url + ADD)
        assert r.status_code == 405, (method, r.text)
        assert r.headers["allow"] == "POST"
        assert r.json()["error"] == f"method {method} is not allowed on {ADD}"
    assert client.get(url + "/v1/models/add").status_code == 200  # the status route itself is untouched


def test_a_refused_row_fails_only_its_own_request(client: httpx.Client) -> None:
    with live(add_model(sleep_s=0.05), max_delay_ms=30) as base:
        def post(a: float) -> httpx.Response:
            with httpx.Client(timeout=30) as c:
                return c.post(base + ADD, json={"instances": [{"a": a, "b": 1}]})

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(post, [1, 2, -1e7, 3, 4, 5]))
    assert [r.status_code for r in responses] == [200, 200, 422, 200, 200, 200]
    assert "a must be at least -1e6" in responses[2].json()["error"]


def test_overload_sheds_with_503_and_retry_after() -> None:
    with live(add_model(sleep_s=0.2), max_batch_size=1, max_delay_ms=0, max_queue=2) as base:
        def post(i: int) -> httpx.Response:
            with httpx.Client(timeout=30) as c:
                return c.post(base + ADD, json={"instances": [{"a": i, "b": 0}]})

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(post, range(16)))
        metrics = httpx.get(base + "/metrics").text
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(503) >= 8
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1 and "retry later" in r.json()["error"]
        else:
            assert r.json()["predictions"][0]["value"] >= 0
    assert f"augury_shed_requests_total {statuses.count(503)}.0" in metrics


def test_too_many_requests_in_flight_are_shed_with_503_before_their_body_is_read() -> None:
    with live(add_model(sleep_s=0.3), max_batch_size=1, max_queue=1000, max_in_flight=3) as base:
        def post(i: int) -> httpx.Response:
            with httpx.Client(timeout=30) as c:
                return c.post(base + ADD, json={"instances": [{"a": i, "b": 0}]})

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            pending = [pool.submit(post, i) for i in range(12)]
            time.sleep(0.1)  # while they are in flight, probes and scrapes are still answered
            assert httpx.get(base + "/v2/health/live").status_code == 200
            assert httpx.get(base + "/metrics").status_code == 200
            responses = [f.result() for f in pending]
        metrics = httpx.get(base + "/metrics").text
        after = httpx.post(base + ADD, json={"instances": [{"a": 1, "b": 2}]})  # the server recovered
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 3, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.headers["x-request-id"]
            assert "--max-in-flight" in r.json()["error"]
    assert f"augury_shed_requests_total {statuses.count(503)}.0" in metrics
    assert 'augury_request_errors_total{error="TooManyInFlight",route="unmatched",status="503"}' in metrics
    assert after.status_code == 200 and after.json()["predictions"][0]["value"] == 3


def test_deadline_passing_before_scoring_is_504() -> None:
    with live(add_model(sleep_s=0.3), max_batch_size=1, max_delay_ms=0) as base:
        started = threading.Event()

        def slow() -> httpx.Response:
            started.set()
            with httpx.Client(timeout=30) as c:
                return c.post(base + ADD, json={"instances": [{"a": 1, "b": 1}]})

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(slow)
            started.wait()
            time.sleep(0.05)  # the slow request is being scored
            with httpx.Client(timeout=30) as c:
                t0 = time.monotonic()
                late = c.post(base + ADD, json={"instances": [{"a": 2, "b": 2}]},
                              headers={"x-augury-deadline-ms": "50"})
                waited = time.monotonic() - t0
                v2 = c.post(base + INFER, json={"inputs": GOOD_V2, "parameters": {"timeout": 50_000}})
                v1 = c.post(base + ADD, json={"instances": [ONE], "parameters": {"deadline_ms": 50}})
                ok = c.post(base + ADD, json={"instances": [{"a": 2, "b": 2}]},
                            headers={"x-augury-deadline-ms": "5000"})
            assert running.result().status_code == 200
    assert late.status_code == 504 and "deadline passed" in late.json()["error"]
    assert waited < 0.25  # answered at its deadline, not after the slow batch
    assert v2.status_code == 504 and v1.status_code == 504
    assert ok.status_code == 200 and ok.json()["predictions"] == [{"value": 4.0}]


def test_status_mapping() -> None:
    assert status_of(SchemaError("x")) == status_of(InputError("x")) == 400
    assert status_of(BodyTooLarge("x")) == 413
    assert status_of(UnscorableError("x")) == 422
    assert status_of(NotFoundError("x")) == status_of(VersionNotFoundError("x")) == 404
    assert status_of(FeaturesChangedError("x")) == 409 and headers_of(FeaturesChangedError("x")) == {}
    assert status_of(OverloadedError("x", 2.5)) == 503
    assert headers_of(OverloadedError("x", 2.5)) == {"retry-after": "3"}
    assert status_of(StoreError("x")) == 503 and headers_of(StoreError("x")) == {"retry-after": "1"}
    assert status_of(StoreUnavailable("x", 2.5)) == 503
    assert headers_of(StoreUnavailable("x", 2.5)) == {"retry-after": "3"}
    assert status_of(StoreBroken("x")) == 500 and headers_of(StoreBroken("x")) == {}
    assert public_message(StoreBroken("/secret/path: WRONGTYPE"), "r1") == f"{INTERNAL_ERROR} (request id r1)"
    assert public_message(StoreUnavailable("redis://h:1 refused"), "r2") == (
        f"{STORE_UNAVAILABLE} (request id r2)")
    assert status_of(DeadlineExceeded("x")) == 504
    assert status_of(PredictionError("x")) == 500


def _key_tensor(keys: list[str]) -> dict[str, Any]:
    return {"inputs": [_tensor("key", keys, "BYTES")]}


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "augury.serve.access"]


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` over a plain socket (httpx refuses URLs past 64 KiB): the status and the body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_a_store_failure_names_no_path_nor_sqlite_internals(client: httpx.Client, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The answer says only that the server failed, and the request id; the cause is in the access log
    line with that id (issue 11: the body carried the database's path and "no such table"). A table of the
    active version missing in an existing store is a broken store (issue 13): 500, not a 503 to retry."""
    path = tmp_path / "broken.db"
    store = SQLiteStore(path)
    publish_values(store, ["k1"], [1.0])
    try:
        with live(None, store, name="cat") as url, caplog.at_level(logging.WARNING, "augury.serve.access"):
            con = sqlite3.connect(path)
            con.execute("DROP TABLE preds_1")  # another connection breaks the active version under it
            con.commit()
            con.close()
            time.sleep(0.2)  # past the readers' snapshots (0.05 s): every lookup now reads the file
            answers = [client.get(f"{url}/v1/models/cat/predictions/k2"),
                       client.post(f"{url}/v1/models/cat:predict", json={"instances": [{"key": "k2"}]}),
                       client.post(f"{url}/v2/models/cat/infer", json=_key_tensor(["k2", "k3"]))]
    finally:
        store.close()
    logged = {json.loads(line)["request_id"]: json.loads(line) for line in _access_lines(caplog)}
    for r in answers:
        assert r.status_code == 500 and "retry-after" not in r.headers, r.text
        rid = r.headers["x-request-id"]
        assert r.json() == {"error": f"{INTERNAL_ERROR} (request id {rid})"}
        assert str(tmp_path) not in r.text and "no such table" not in r.text
        assert "no such table: preds_1" in logged[rid]["error"] and str(path) in logged[rid]["error"]


def test_a_huge_key_gets_a_small_answer_and_a_small_log_line(client: httpx.Client, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A 1 MB key (in a body; in a URL as long as the HTTP parser takes) is echoed cut to its first 64
    characters and its length, in the response and in the log line (issue 11: 1 MB and 2 MB before)."""
    store = SQLiteStore(tmp_path / "s.db")
    publish_values(store, ["k1"], [1.0])
    huge, long = "k" * 1_000_000, "k" * 60_000
    try:
        with live(None, store, name="cat") as url, caplog.at_level(logging.WARNING, "augury.serve.access"):
            answers = [
                (r.status_code, r.content) for r in (
                    client.post(f"{url}/v1/models/cat:predict", json={"instances": [{"key": huge}]}),
                    client.post(f"{url}/v2/models/cat/infer", json=_key_tensor([huge])))]
            answers += [_raw_get(url, path) for path in (f"/v1/models/cat/predictions/{long}",
                                                         f"/v1/models/{long}/predictions/k1",
                                                         f"/v2/models/cat/versions/{long}/ready", f"/{long}")]
    finally:
        store.close()
    for (status, body), size in zip(answers, [huge, huge, long, long, long, long], strict=True):
        assert status == 404 and len(body) < 1_000, body[:300]
        if "route" not in body.decode():  # ("no route GET /kkk...": the path, cut at 256 characters)
            assert f"'{'k' * 64}'... ({len(size):,} characters)" in json.loads(body)["error"]
    lines = _access_lines(caplog)
    assert len(lines) == 6 and all(len(line) < 2_000 for line in lines), [len(line) for line in lines]
