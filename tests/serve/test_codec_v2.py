"""The Open Inference Protocol (v2) over HTTP: metadata, health, JSON and binary tensors, a stock client."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pyarrow as pa
import pytest
import tritonclient.http as triton

from augury.batch import BatchOptions, run_batch
from augury.errors import AuguryError
from augury.models import Model, predict_checked
from augury.publish import publish_predictions
from augury.schema import Schema
from augury.serve import codec_v2
from augury.serve.casting import RowCaster
from augury.store import SQLiteStore
from augury.verify import load_checks

from .helpers import add_model, live, publish_values, review_rows

ROWS = np.random.default_rng(11).normal(size=(6, 4))


def _expected(model: Model, x: np.ndarray) -> dict[str, list[Any]]:
    batch = pa.record_batch({f"f{j}": x[:, j] for j in range(x.shape[1])})
    out = predict_checked(model, batch)
    return {name: out.column(name).to_pylist() for name in out.schema.names}


def _outputs(body: dict[str, Any]) -> dict[str, list[Any]]:
    return {o["name"]: o["data"] for o in body["outputs"]}


@pytest.fixture(scope="module")
def hgb_url(hgb: Model) -> Iterator[str]:
    with live(hgb, max_delay_ms=1) as url:
        yield url


def test_health_and_metadata(hgb_url: str, hgb: Model, client: httpx.Client) -> None:
    version = hgb.info.version
    assert client.get(f"{hgb_url}/v2/health/live").json() == {"live": True}
    assert client.get(f"{hgb_url}/v2/health/ready").json() == {"ready": True}
    server = client.get(f"{hgb_url}/v2").json()
    assert server["name"] == "augury"
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    meta = client.get(f"{hgb_url}/v2/models/hgb").json()
    assert meta["name"] == "hgb" and meta["versions"] == [version] and meta["platform"] == "augury_sklearn"
    assert meta["inputs"] == [{"name": f"f{i}", "datatype": "FP64", "shape": [-1]} for i in range(4)]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("label", "INT64"), ("proba_0", "FP64"), ("proba_1", "FP64")]
    assert meta["parameters"]["features"] == ["f0", "f1", "f2", "f3"]
    assert any("[n, 4]" in layout for layout in meta["parameters"]["layouts"])
    assert client.get(f"{hgb_url}/v2/models/hgb/versions/{version}").json() == meta
    assert client.get(f"{hgb_url}/v2/models/hgb/ready").json()["ready"] is True
    assert client.get(f"{hgb_url}/v2/models/hgb/versions/{version}/ready").status_code == 200
    for path in ("/v2/models/hgb/versions/nope", "/v2/models/nope", "/v2/models/hgb/versions/nope/ready"):
        r = client.get(hgb_url + path)
        assert r.status_code == 404 and "error" in r.json(), path


def test_one_tensor_per_feature(hgb_url: str, hgb: Model, client: httpx.Client) -> None:
    inputs = [{"name": f"f{j}", "shape": [6], "datatype": "FP64", "data": ROWS[:, j].tolist()}
              for j in range(4)]
    inputs[3] = {**inputs[3], "shape": [6, 1], "data": [[v] for v in ROWS[:, 3].tolist()]}
    r = client.post(f"{hgb_url}/v2/models/hgb/infer", json={"id": "abc", "inputs": inputs})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "abc" and body["model_name"] == "hgb" and body["model_version"] == hgb.info.version
    assert _outputs(body) == _expected(hgb, ROWS)
    assert [o["shape"] for o in body["outputs"]] == [[6]] * 3
    assert [o["datatype"] for o in body["outputs"]] == ["INT64", "FP64", "FP64"]
    assert len(body["parameters"]["provenance"]) == 6
    assert {p["source"] for p in body["parameters"]["provenance"]} == {"dynamic"}
    assert r.headers["x-augury-source"] == "static=0,dynamic=6"


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "BYTES"])
def test_one_2d_tensor_in_feature_order(hgb_url: str, hgb: Model, client: httpx.Client,
                                        datatype: str) -> None:
    x = ROWS.astype(np.float32).astype(np.float64) if datatype == "FP32" else ROWS
    data: list[Any] = x.tolist() if datatype != "BYTES" else [[repr(v) for v in row] for row in x.tolist()]
    r = client.post(f"{hgb_url}/v2/models/hgb/infer",
                    json={"inputs": [{"name": "input", "shape": [6, 4], "datatype": datatype, "data": data}],
                          "outputs": [{"name": "proba_1"}, {"name": "label"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [o["name"] for o in body["outputs"]] == ["proba_1", "label"]
    expected = _expected(hgb, x)
    assert _outputs(body) == {"proba_1": expected["proba_1"], "label": expected["label"]}


def test_binary_tensors_in_and_out(hgb_url: str, hgb: Model, client: httpx.Client) -> None:
    header = {"inputs": [{"name": "input", "shape": [6, 4], "datatype": "FP64",
                          "parameters": {"binary_data_size": ROWS.nbytes}}],
              "parameters": {"binary_data_output": True}}
    head = orjson.dumps(header)
    r = client.post(f"{hgb_url}/v2/models/hgb/infer", content=head + ROWS.astype("<f8").tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    body = orjson.loads(r.content[:n])
    blob = r.content[n:]
    expected = _expected(hgb, ROWS)
    offset = 0
    for out in body["outputs"]:
        size = out["parameters"]["binary_data_size"]
        dtype = {"INT64": "<i8", "FP64": "<f8"}[out["datatype"]]
        assert np.frombuffer(blob[offset:offset + size], dtype=dtype).tolist() == expected[out["name"]]
        offset += size
    assert offset == len(blob)


def test_stock_triton_client(hgb_url: str, hgb: Model) -> None:
    client = triton.InferenceServerClient(url=hgb_url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("hgb")
        meta = client.get_model_metadata("hgb")
        assert [i["name"] for i in meta["inputs"]] == ["f0", "f1", "f2", "f3"]
        assert client.get_server_metadata()["name"] == "augury"
        expected = _expected(hgb, ROWS)
        for binary in (True, False):  # the client's default (binary tensors) and plain JSON
            inputs = []
            for j in range(4):
                tensor = triton.InferInput(f"f{j}", [6], "FP64")
                tensor.set_data_from_numpy(ROWS[:, j].copy(), binary_data=binary)
                inputs.append(tensor)
            outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "proba_1")]
            result = client.infer("hgb", inputs, outputs=outputs, request_id="r1")
            assert result.as_numpy("label").tolist() == expected["label"]
            assert result.as_numpy("proba_1").tolist() == expected["proba_1"]
            response = result.get_response()
            assert response["id"] == "r1"
            assert [p["source"] for p in response["parameters"]["provenance"]] == ["dynamic"] * 6
        matrix = triton.InferInput("input", [6, 4], "FP64")
        matrix.set_data_from_numpy(ROWS)
        result = client.infer("hgb", [matrix])  # no outputs named: every output, binary
        assert result.as_numpy("proba_0").tolist() == expected["proba_0"]
        with pytest.raises(triton.InferenceServerException, match="missing input tensor"):
            client.infer("hgb", inputs[:2])
    finally:
        client.close()


def test_strings_through_the_triton_client(text_model: Model) -> None:
    rows = review_rows(5, seed=8)
    batch = pa.record_batch({"review": rows["review"], "stars": rows["stars"]})
    expected = predict_checked(text_model, batch)
    with live(text_model) as url:
        client = triton.InferenceServerClient(url=url.removeprefix("http://"))
        try:
            review = triton.InferInput("review", [5, 1], "BYTES")
            review.set_data_from_numpy(np.array(rows["review"], dtype=object).reshape(5, 1))
            stars = triton.InferInput("stars", [5], "FP64")
            stars.set_data_from_numpy(np.array(rows["stars"]))
            result = client.infer("reviews", [review, stars])
        finally:
            client.close()
    assert [v.decode() for v in result.as_numpy("label").tolist()] == expected.column("label").to_pylist()
    assert result.as_numpy("proba_high").tolist() == expected.column("proba_high").to_pylist()


def test_key_tensor_in_hybrid_and_static_mode(client: httpx.Client, sqlite_store: SQLiteStore) -> None:
    version = publish_values(sqlite_store, ["k1", "7"], [10.0, 70.0], model_version="1")
    request = {"inputs": [{"name": "key", "shape": [3], "datatype": "BYTES", "data": ["k1", "k2", "7"]},
                          {"name": "a", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]},
                          {"name": "b", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}]}
    with live(add_model(), sqlite_store) as url:
        r = client.post(f"{url}/v2/models/add/infer", json=request)
    assert r.status_code == 200, r.text
    assert _outputs(r.json()) == {"value": [10.0, 4.0, 70.0]}
    provenance = r.json()["parameters"]["provenance"]
    assert [p["source"] for p in provenance] == ["static", "dynamic", "static"]
    assert provenance[0]["store_version"] == version
    assert r.headers["x-augury-source"] == "static=2,dynamic=1"
    with live(None, sqlite_store, name="add") as url:
        lookup = {"inputs": [{"name": "key", "shape": [2, 1], "datatype": "INT64", "data": [[7], [7]]}]}
        r = client.post(f"{url}/v2/models/add/infer", json=lookup)
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == [
            {"name": "value", "datatype": "FP64", "shape": [2], "data": [70.0, 70.0]}]
        meta = client.get(f"{url}/v2/models/add").json()
        assert meta["inputs"] == [{"name": "key", "datatype": "BYTES", "shape": [-1]}]
        assert meta["versions"] == ["1"]
        miss = client.post(f"{url}/v2/models/add/infer", json={
            "inputs": [{"name": "key", "shape": [1], "datatype": "BYTES", "data": ["k9"]}]})
        assert miss.status_code == 404 and "never precomputed" in miss.json()["error"]


def test_static_metadata_names_the_datatypes_infer_returns(hgb_model: Path, features_parquet: Path,
                                                           tmp_path: Path, client: httpx.Client) -> None:
    """A classifier's predictions published and served static: the metadata said `label` was BYTES (a
    guess from the profile) while infer returned INT64; and `augury_model_info` had version=""."""
    predictions = tmp_path / "p.parquet"
    run_batch(str(hgb_model), features_parquet, predictions,
              BatchOptions(key_columns=("id",), engine="inline"))
    store = SQLiteStore(tmp_path / "s.db")
    try:
        model_version = publish_predictions(predictions, store, load_checks(None)).version.model_version
        keys = {"name": "key", "shape": [2], "datatype": "BYTES", "data": ["3", "4"]}
        with live(None, store, name="hgb") as url:
            meta = client.get(f"{url}/v2/models/hgb").json()
            answered = []
            for extra in ({}, {"parameters": {"binary_data_output": True}}):
                r = client.post(f"{url}/v2/models/hgb/infer", json={"inputs": [keys], **extra})
                assert r.status_code == 200, r.text
                length = int(r.headers.get("inference-header-content-length", len(r.content)))
                answered.append(orjson.loads(r.content[:length]))
            metrics = client.get(f"{url}/metrics").text
    finally:
        store.close()
    declared = {o["name"]: o["datatype"] for o in meta["outputs"]}
    assert declared == {"label": "INT64", "proba_0": "FP64", "proba_1": "FP64"}
    for body in answered:
        assert {o["name"]: o["datatype"] for o in body["outputs"]} == declared
    assert f'augury_model_info{{mode="static",name="hgb",version="{model_version}"}} 1.0' in metrics


def test_bytes_binary_elements_are_length_prefixed(client: httpx.Client, text_model: Model) -> None:
    texts = ["good film", "été naïve"]
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = orjson.dumps({"inputs": [
        {"name": "review", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}},
        {"name": "stars", "shape": [2], "datatype": "FP64", "data": [4.5, 1.0]}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "proba_low"}]})
    expected = predict_checked(text_model, pa.record_batch({"review": texts, "stars": [4.5, 1.0]}))
    with live(text_model) as url:
        r = client.post(f"{url}/v2/models/reviews/infer", content=header + raw,
                        headers={"inference-header-content-length": str(len(header))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    body = orjson.loads(r.content[:n])
    assert body["outputs"][1]["data"] == expected.column("proba_low").to_pylist()
    labels, blob, pos = [], r.content[n:], 0
    while pos < len(blob):
        (size,) = struct.unpack_from("<I", blob, pos)
        labels.append(blob[pos + 4:pos + 4 + size].decode())
        pos += 4 + size
    assert labels == expected.column("label").to_pylist()


def _parsed(doc: Any, schema: Schema, cast: RowCaster) -> Any:
    try:
        return codec_v2.parse_infer(doc, b"", schema, ignore_unknown=False, max_instances=4096, cast=cast)
    except AuguryError as exc:
        return type(exc), str(exc)


_ROW = [0.5, -0.0, 1e308, 2.0]


@pytest.mark.parametrize("doc", [
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW}]},
    {"id": "r1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 2**70]}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [math.nan, 1.0, 2.0, 3.0]}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [math.inf, 1.0, 2.0, 3.0]}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [None, 1.0, 2.0, 3.0]}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [True, 1.0, 2.0, 3.0]}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": ["1", 1.0, 2.0, 3.0]}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [[0.5, 1.0, 2.0, 3.0]]}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW[:3]}]},
    {"inputs": [{"name": "x", "shape": [1.0, 4], "datatype": "FP64", "data": _ROW}]},
    {"inputs": [{"name": "x", "shape": [True, 4], "datatype": "FP64", "data": _ROW}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": _ROW}]},
    {"inputs": [{"name": "key", "shape": [1, 4], "datatype": "FP64", "data": _ROW}]},
    {"inputs": [{"name": "f0", "shape": [1, 4], "datatype": "FP64", "data": _ROW}]},
    {"inputs": [{"name": "", "shape": [1, 4], "datatype": "FP64", "data": _ROW}]},
    {"id": 7, "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW}], "parameters": {}},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW}],
     "outputs": [{"name": "label"}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW, "parameters": {}}]},
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW}] * 2},
])
def test_the_one_row_shortcut_answers_as_the_general_path(doc: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    schema = Schema.of([(f"f{j}", "float64") for j in range(4)])
    cast = RowCaster(schema)
    fast = _parsed(doc, schema, cast)
    monkeypatch.setattr(codec_v2, "_one_row", lambda *args: None)
    assert fast == _parsed(doc, schema, cast)


def test_the_one_row_shortcut_is_taken_for_the_plain_request() -> None:
    schema = Schema.of([(f"f{j}", "float64") for j in range(4)])
    cast = RowCaster(schema)
    tensor = {"name": "x", "shape": [1, 4], "datatype": "FP64", "data": _ROW}
    for doc in ({"inputs": [tensor]}, {"id": "r1", "inputs": [tensor]}):
        taken = codec_v2._one_row(doc, b"", schema, cast)
        assert taken is not None and taken.examples[0].row == _ROW and taken.id == doc.get("id")
    strings = Schema.of([("f0", "float64"), ("f1", "string")])  # FP64 does not fit a string feature
    two = {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [0.5, 1.0]}
    assert codec_v2._one_row({"inputs": [two]}, b"", strings, RowCaster(strings)) is None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)  # binary BYTES come back as bytes, JSON as str


def test_classification_extension_through_the_stock_client(hgb_url: str, hgb: Model) -> None:
    """``class_count`` (the classification extension): per row, the most probable classes first, each
    "<probability>:<class index>:<class>", as Triton answers it; JSON or binary alike."""
    expected = _expected(hgb, ROWS)
    client = triton.InferenceServerClient(url=hgb_url.removeprefix("http://"))
    try:
        matrix = triton.InferInput("input", [6, 4], "FP64")
        matrix.set_data_from_numpy(ROWS)
        for binary in (True, False):
            outputs = [triton.InferRequestedOutput("label", binary_data=binary, class_count=2),
                       triton.InferRequestedOutput("proba_1", binary_data=binary, class_count=1)]
            result = client.infer("hgb", [matrix], outputs=outputs)
            top2, top1 = result.as_numpy("label"), result.as_numpy("proba_1")
            assert top2.shape == (6, 2) and top1.shape == (6, 1)
            for row in range(6):
                probabilities = [expected["proba_0"][row], expected["proba_1"][row]]
                first = max(range(2), key=lambda i: (probabilities[i], -i))
                want = [f"{probabilities[i]!r}:{i}:{i}" for i in (first, 1 - first)]
                assert [_text(v) for v in top2[row]] == want
                assert _text(top1[row][0]) == want[0]
                assert int(want[0].split(":")[1]) == expected["label"][row]
    finally:
        client.close()


@pytest.mark.parametrize(("output", "message"), [
    ({"name": "label", "parameters": {"classification": -1}}, "whole number of classes"),
    ({"name": "label", "parameters": {"classification": True}}, "whole number of classes"),
    ({"name": "label", "parameters": {"classification": "2"}}, "whole number of classes"),
])
def test_bad_classification_requests_are_400(hgb_url: str, client: httpx.Client, output: dict[str, Any],
                                             message: str) -> None:
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROWS[0].tolist()}],
            "outputs": [output]}
    r = client.post(f"{hgb_url}/v2/models/hgb/infer", json=body)
    assert r.status_code == 400 and message in r.json()["error"]


def test_classification_needs_class_probabilities(client: httpx.Client) -> None:
    with live(add_model()) as url:  # a regressor: value, no proba_<class>
        body = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                           {"name": "b", "shape": [1], "datatype": "FP64", "data": [2.0]}],
                "outputs": [{"name": "value", "parameters": {"classification": 1}}]}
        r = client.post(f"{url}/v2/models/add/infer", json=body)
        assert r.status_code == 400 and "no proba_<class> outputs" in r.json()["error"]
        body["outputs"] = [{"name": "value", "parameters": {"classification": 0}}]  # 0: none asked
        assert client.post(f"{url}/v2/models/add/infer", json=body).json()["outputs"][0]["data"] == [3.0]
