"""Fuzzing the live server from its own OpenAPI document with schemathesis: valid and invalid requests to
every route; no response may be a server error, and responses must match the document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from augury.models import Model
from augury.store import SQLiteStore

from .helpers import live, publish_values


@pytest.fixture(scope="module")
def hybrid_url(hgb: Model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = SQLiteStore(Path(tmp_path_factory.mktemp("fuzz")) / "s.db")
    publish_values(store, ["k1", "k2"], [0.1, 0.2], model_version=hgb.info.version)
    try:
        with live(hgb, store, max_instances=64, max_body_bytes=1 << 16) as url:
            yield url
    finally:
        store.close()


NOTHING_TO_NEGATE = {"GET /v2/health/live", "GET /v2/health/ready", "GET /v2", "GET /metrics",
                     "GET /openapi.json", "GET /dashboard", "GET /dashboard/data"}


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """No 5xx, except the documented ones: 503 with Retry-After (shed, or the store down) and 504 for a
    request that asked for a deadline."""
    status = response.status_code
    if status < 500:
        return None
    if status == 503 and "retry-after" in {k.lower() for k in response.headers}:
        return None
    sent = {k.lower() for k in (case.headers or {})}
    parameters = case.body.get("parameters") if isinstance(case.body, dict) else None
    asked = "x-augury-deadline-ms" in sent or (isinstance(parameters, dict) and
                                                ("deadline_ms" in parameters or "timeout" in parameters))
    if status == 504 and asked:
        return None
    raise AssertionError(f"{case.method} {case.formatted_path} answered {status}: {response.text[:300]}")


def test_openapi_document_describes_every_route(hybrid_url: str, hgb: Model) -> None:
    doc = httpx.get(f"{hybrid_url}/openapi.json").json()
    operations = {f"{method.upper()} {path}" for path, item in doc["paths"].items() for method in item}
    assert operations == {
        "GET /v2/health/live", "GET /v2/health/ready", "GET /v2", "GET /v2/models/{name}",
        "GET /v2/models/{name}/versions/{version}", "GET /v2/models/{name}/ready",
        "GET /v2/models/{name}/versions/{version}/ready", "POST /v2/models/{name}/infer",
        "POST /v2/models/{name}/versions/{version}/infer", "POST /v1/models/{name}:predict",
        "GET /v1/models/{name}", "GET /v1/models/{name}/predictions/{key}", "GET /metrics",
        "GET /openapi.json", "GET /dashboard", "GET /dashboard/data",
    }
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "200" in op["responses"], (method, path)
            if method == "post":
                assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"], path
    instance = doc["components"]["schemas"]["Instance"]
    assert instance["additionalProperties"] is False
    assert instance["properties"]["f0"] == {"type": "number", "nullable": True}  # HGB takes NaN
    assert set(doc["components"]["schemas"]["Prediction"]["properties"]) == set(hgb.info.outputs.names)


def _fuzzer(strategy: Any, url: str, checks: list[Any], seen: set[int]) -> Any:
    @hypothesis.settings(max_examples=25, deadline=None, database=None, derandomize=True,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=url)
        seen.add(response.status_code)
        case.validate_response(response, checks=checks)

    return run


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzzing_finds_no_server_error(hybrid_url: str, mode: str) -> None:
    schema = schemathesis.openapi.from_url(f"{hybrid_url}/openapi.json")
    checks = [no_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))
        run = _fuzzer(strategy, hybrid_url, checks, statuses.setdefault(operation.label, set()))
        try:
            run()
        except hypothesis.errors.Unsatisfiable:  # nothing to make invalid: no parameters, no body
            assert mode == "negative" and operation.label in NOTHING_TO_NEGATE, operation.label
    if mode == "positive":  # valid requests reach the model: at least some of them are answered
        assert 200 in statuses["POST /v1/models/{name}:predict"], statuses
        assert 200 in statuses["GET /v2/models/{name}"], statuses
