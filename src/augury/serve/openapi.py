"""The OpenAPI 3.0 document of the whole HTTP API (``GET /openapi.json``), written for this model.

It is built once per app from the model's input and output schema, so a client generator, or a fuzzer
such as schemathesis, knows the feature names and types a v1 instance takes, the outputs it gets back,
and the model name the paths take. Every operation lists its request body, its parameters, its
success response and the error responses it can give (`serve.errors`), all with their schemas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from augury.schema import Field, Schema
from augury.serve.settings import ServeSettings
from augury.serve.v2_tensors import DATATYPES
from augury.serve.wire import MAX_DEADLINE_MS

_ERRORS = {
    "400": "Bad input: malformed JSON, wrong shape or datatype, missing or unknown feature, bad value.",
    "404": "Unknown model or version, or a key that was never precomputed.",
    "413": "Body larger than --max-body-bytes, or more instances than --max-instances.",
    "415": "Unsupported Content-Encoding.",
    "422": "The model could not score an example (its error is in the message).",
    "503": "Overloaded (the queue is full) or the prediction store is unavailable; see Retry-After.",
    "504": "The request's deadline passed before it was scored.",
}
_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _body(_ref("Error"), _ERRORS[code]) for code in codes}


def _feature(f: Field) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = {
        "float64": {"type": "number"}, "float32": {"type": "number"},
        "int64": {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1},
        "int32": {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1},
        "bool": {"type": "boolean"}, "string": {"type": "string"},
    }
    kind = kinds[f.dtype]
    if f.allow_missing:
        kind = {**kind, "nullable": True}
    return kind


def _output(datatype: str | None) -> dict[str, Any]:
    kind = {"FP64": "number", "FP32": "number", "INT64": "integer", "INT32": "integer", "BOOL": "boolean",
            "BYTES": "string"}.get(datatype or "")
    return {"type": kind, "nullable": True} if kind else {}


def _schemas(inputs: Schema | None, outputs: Sequence[tuple[str, str | None]],
             settings: ServeSettings) -> dict[str, Any]:
    scalar: list[dict[str, Any]] = [{"type": "string"}, {"type": "number"}]
    several = {"type": "array", "minItems": 1, "items": {"oneOf": scalar}}
    key = {"oneOf": [*scalar, {"type": "boolean"}, several],
           "description": "The example's store key (a list for several key columns)."}
    if inputs is not None:
        props = {f.name: _feature(f) for f in inputs.fields}
        if "key" not in props:
            props["key"] = key
        instance: dict[str, Any] = {
            "type": "object", "properties": props,
            "anyOf": [{"required": inputs.names}, {"required": ["key"]}],
            "description": "One example: every feature (cast to its dtype), optionally its store key; "
                           "or only a key, to look a precomputed prediction up.",
        }
        if not settings.ignore_unknown_fields:
            instance["additionalProperties"] = False
    else:
        instance = {"type": "object", "required": ["key"], "properties": {"key": key}}
    prediction = {"type": "object", "properties": {n: _output(d) for n, d in outputs}}
    deadline = {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": MAX_DEADLINE_MS}
    tensor_out = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}, "data": {"type": "array"},
        "parameters": {"type": "object"}}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Provenance": {"type": "object", "required": ["source", "model_version"], "properties": {
            "source": {"type": "string", "enum": ["static", "dynamic"]},
            "model_version": {"type": "string"}, "store_version": {"type": "string"},
            "computed_at": {"type": "string", "format": "date-time"}, "age_s": {"type": "number"},
            "cached": {"type": "boolean"}}},
        "Instance": instance,
        "Prediction": prediction,
        "PredictRequest": {"type": "object", "required": ["instances"], "additionalProperties": False,
                           "properties": {
                               "instances": {"type": "array", "minItems": 1,
                                             "maxItems": settings.max_instances, "items": _ref("Instance")},
                               "parameters": {"type": "object", "properties": {"deadline_ms": deadline}}}},
        "PredictResponse": {"type": "object", "required": ["predictions", "provenance"], "properties": {
            "predictions": {"type": "array", "items": _ref("Prediction") if inputs is not None else {
                "anyOf": [_ref("Prediction"), _ref("Miss")]}},
            "provenance": {"type": "array", "items": _ref("Provenance") if inputs is not None else {
                "allOf": [_ref("Provenance")], "nullable": True}}}},
        "Miss": {"type": "object", "required": ["error", "key"], "description":
                 "Static mode, several keys: a key the store does not hold (its provenance is null).",
                 "properties": {"error": {"type": "string", "enum": ["not found"]},
                                "key": {"type": "string"}}},
        "LookupResponse": {"type": "object", "required": ["key", "prediction", "provenance"], "properties": {
            "key": {"type": "string"}, "prediction": _ref("Prediction"), "provenance": _ref("Provenance")}},
        "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "deadline_ms": deadline, "timeout": {"type": "integer", "minimum": 1},
                "binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "shape": {"type": "array", "minItems": 1, "maxItems": 2,
                              "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": list(DATATYPES)},
                    "data": {"type": "array"}, "parameters": {"type": "object"}}}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"}, "parameters": {"type": "object"}}}}}},
        "InferResponse": {"type": "object", "required": ["model_name", "outputs", "parameters"],
                          "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "parameters": {"type": "object", "required": ["provenance"], "properties": {
                "provenance": {"type": "array", "items": _ref("Provenance")}}},
            "outputs": {"type": "array", "items": tensor_out}}},
        "ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                          "properties": {"name": {"type": "string"},
                                         "versions": {"type": "array", "items": {"type": "string"}},
                                         "platform": {"type": "string"},
                                         "inputs": {"type": "array", "items": tensor_out},
                                         "outputs": {"type": "array", "items": tensor_out},
                                         "parameters": {"type": "object"}}},
        "ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}},
        "Status": {"type": "object", "properties": {
            "live": {"type": "boolean"}, "ready": {"type": "boolean"}, "name": {"type": "string"},
            "error": {"type": "string"}, "degraded": {"type": "string"}}},
        "ModelStatus": {"type": "object", "required": ["name", "ready"], "properties": {
            "name": {"type": "string"}, "ready": {"type": "boolean"}, "mode": {"type": "string"},
            "model_version": {"type": "string", "nullable": True}, "inputs": {"type": "array"},
            "outputs": {"type": "array"}, "error": {"type": "string"}}},
    }


def build_openapi(*, name: str, mode: str, inputs: Schema | None, outputs: Sequence[tuple[str, str | None]],
                  settings: ServeSettings, version: str, model_version: str | None) -> dict[str, Any]:
    """The OpenAPI document of a server for model `name` in `mode` (see the module docstring);
    `model_version` is the model's version when it cannot change while the server runs."""
    name_p = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": [name]},
              "description": "The model's name."}
    version_s: dict[str, Any] = {"type": "string"} if model_version is None else {"type": "string",
                                                                                  "enum": [model_version]}
    version_p = {"name": "version", "in": "path", "required": True, "schema": version_s,
                 "description": "The model version (see GET /v2/models/{name})."}
    key_p = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "The example's store key."}
    headers = [
        {"name": "X-Request-Id", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "Echoed in the response (generated when absent)."},
        {"name": "X-Augury-Deadline-Ms", "in": "header", "required": False,
         "schema": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": MAX_DEADLINE_MS},
         "description": "Answer within this many milliseconds, or get 504 without the request being scored."},
    ]

    def get(summary: str, schema: str, params: list[dict[str, Any]], *codes: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": params,
                        "responses": {"200": _body(_ref(schema), summary), **_errors(*codes)}}}

    def post(summary: str, request: str, response: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return {"post": {"summary": summary, "parameters": [*params, *headers],
                         "requestBody": {"required": True, "content": {_JSON: {"schema": _ref(request)}}},
                         "responses": {"200": _body(_ref(response), summary),
                                       **_errors("400", "404", "413", "415", "422", "503", "504")}}}

    infer = "Predict with the Open Inference Protocol (v2); the binary tensor extension is supported."
    paths = {
        "/v2/health/live": get("Liveness.", "Status", []),
        "/v2/health/ready": get("Readiness (503 until ready).", "Status", [], "503"),
        "/v2": get("Server metadata.", "ServerMetadata", []),
        "/v2/models/{name}": get("Model metadata.", "ModelMetadata", [name_p], "404"),
        "/v2/models/{name}/versions/{version}": get("Model metadata.", "ModelMetadata", [name_p, version_p],
                                                    "404"),
        "/v2/models/{name}/ready": get("Model readiness.", "ModelStatus", [name_p], "404", "503"),
        "/v2/models/{name}/versions/{version}/ready": get("Model readiness.", "ModelStatus",
                                                          [name_p, version_p], "404", "503"),
        "/v2/models/{name}/infer": post(infer, "InferRequest", "InferResponse", [name_p]),
        "/v2/models/{name}/versions/{version}/infer": post(infer, "InferRequest", "InferResponse",
                                                           [name_p, version_p]),
        "/v1/models/{name}": get("Model status.", "ModelStatus", [name_p], "404"),
        "/v1/models/{name}:predict": post("Predict instances (v1).", "PredictRequest", "PredictResponse",
                                          [name_p]),
        "/v1/models/{name}/predictions/{key}": get("Look a precomputed prediction up by key.",
                                                   "LookupResponse", [name_p, key_p], "404", "503"),
        "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": {
            "description": "Prometheus text format.",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/dashboard": {"get": {"summary": "The live dashboard: a self-contained HTML page.", "responses": {
            "200": {"description": "An HTML page.",
                    "content": {"text/html": {"schema": {"type": "string"}}}}}}},
        "/dashboard/data": {"get": {"summary": "What the dashboard draws (docs/monitor.md).", "responses": {
            "200": _body({"type": "object"}, "Rates, percentiles and monitor state from the metrics.")}}},
        "/openapi.json": {"get": {"summary": "This document.", "responses": {"200": _body(
            {"type": "object"}, "The OpenAPI document.")}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"augury: {name} ({mode})", "version": version,
                 "description": "Static, dynamic and hybrid predictions with provenance. Errors are "
                                '{"error": "..."}; every response carries X-Request-Id, prediction responses '
                                "X-Augury-Source, X-Augury-Model-Version and X-Augury-Store-Version."},
        "paths": paths,
        "components": {"schemas": _schemas(inputs, outputs, settings)},
    }
