"""The hot routes answer the same whether `HotRoutes` dispatches them or Starlette's router does."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from augury.serve import ServeSettings, create_app
from augury.store import SQLiteStore

from .helpers import add_model, publish_values

REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/models/add:predict", {"instances": [{"a": 1, "b": 2}, {"key": "k1"}]}),
    ("POST", "/v1/models/add:predict", {"instances": [{"a": 1}]}),
    ("POST", "/v1/models/nope:predict", {"instances": [{"a": 1, "b": 2}]}),
    ("POST", "/v1/models/add:predict", {"instances": [{"key": "never"}]}),
    ("GET", "/v1/models/add/predictions/k1", None),
    ("GET", "/v1/models/add/predictions/a/b c", None),
    ("GET", "/v1/models/add/predictions/", None),
    ("GET", "/v1/models/add:predict", None),
    ("POST", "/v1/models/add/predictions/k1", None),
    ("POST", "/v2/models/add/infer", {"inputs": [
        {"name": "a", "shape": [1], "datatype": "FP64", "data": [1]},
        {"name": "b", "shape": [1], "datatype": "FP64", "data": [5]}]}),
    ("POST", "/v2/models/add/versions/1/infer", {"inputs": [{"name": "key", "shape": [1], "datatype": "BYTES",
                                                             "data": ["k1"]}]}),
    ("POST", "/v2/models/add/versions/9/infer", {"inputs": []}),
    ("POST", "/v2/models/add/versions/infer", {"inputs": []}),
]


async def _answers(app: Any, root_path: str) -> list[tuple[int, dict[str, str], Any]]:
    transport = httpx.ASGITransport(app=app, root_path=root_path)
    out = []
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for method, path, body in REQUESTS:
            r = await client.request(method, root_path + path, json=body)
            headers = {k: v for k, v in r.headers.items() if k.startswith("x-augury") or k == "retry-after"}
            content = r.json() if r.headers.get("content-type") == "application/json" else r.text
            if isinstance(content, dict) and root_path and "error" in content:  # messages name the path
                content["error"] = content["error"].replace(root_path, "")
            out.append((r.status_code, headers, _timeless(content)))
    return out


def _timeless(doc: Any) -> Any:
    """`doc` without the provenance fields that depend on when it was answered."""
    if isinstance(doc, dict):
        return {k: _timeless(v) for k, v in doc.items() if k not in ("computed_at", "age_s")}
    if isinstance(doc, list):
        return [_timeless(v) for v in doc]
    return doc


def test_hot_routes_answer_as_the_router_does(sqlite_store: SQLiteStore) -> None:
    publish_values(sqlite_store, ["k1", "a/b c"], [5.0, 6.0])
    app = create_app(ServeSettings(), add_model(), sqlite_store)

    async def both() -> tuple[list[Any], list[Any]]:
        hot = await _answers(app, "")
        routed = await _answers(app, "/prefix")  # a root_path: HotRoutes steps aside
        await app.state.service.router._batcher.close()
        return hot, routed

    hot, routed = asyncio.run(both())
    assert hot == routed
    statuses = [200, 400, 404, 404, 200, 200, 404, 405, 405, 200, 200, 404, 405]  # (GET :predict: 405)
    assert [status for status, _, _ in hot] == statuses
    assert hot[0][1]["x-augury-source"] == "static=1,dynamic=1"


@pytest.mark.parametrize("path", ["/v1/models/add:predict", "/v2/models/add/infer"])
def test_hot_routes_are_counted_under_their_route_template(path: str) -> None:
    app = create_app(ServeSettings(), add_model(), None)

    async def run() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = ({"instances": [{"a": 1, "b": 2}]} if "v1" in path else
                    {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]})
            assert (await client.post(path, json=body)).status_code == 200
            text = (await client.get("/metrics")).text
        await app.state.service.router._batcher.close()
        return text

    template = path.replace("/add", "/{name}")
    assert f'augury_requests_total{{method="POST",route="{template}",status="200"}} 1.0' in asyncio.run(run())
