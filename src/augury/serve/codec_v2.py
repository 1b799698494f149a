"""The Open Inference Protocol (v2) for tabular models: infer requests to examples, answers to tensors.

A tabular model takes its features in one of two layouts (the model metadata's ``parameters`` says so):

- one tensor per feature, named after it, of shape ``[n]`` or ``[n, 1]``, its datatype fitting the
  feature (BYTES for a string feature; FP*, INT* or UINT* for a number; BOOL or integers 0/1 for a bool);
- one 2-D tensor ``[n, n_features]`` under any other name, its columns in the metadata's input order:
  BYTES (each element cast to its feature's dtype, as a float sent as JSON text is), or any numeric
  datatype when every feature is numeric.

A BYTES (or integer) tensor named ``key`` of shape ``[n]`` (``[n, k]`` for k key columns) gives the rows'
store keys; with no feature tensors, every row is a pure lookup (the only layout in static mode). Rows
are cast with `schema.cast_row` (through `serve.casting`), as v1 instances are. The response has one
tensor ``[n]`` per output column (``label``, ``proba_<class>``, ``value``...), or those the request's
``outputs`` names, and ``parameters.provenance``: one provenance object per row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from augury.errors import InputError, SchemaError
from augury.keys import key_text
from augury.schema import Schema
from augury.serve.answers import Answer, Example
from augury.serve.casting import RowCaster
from augury.serve.errors import TooManyInstances
from augury.serve.v2_tensors import (
    INTEGER_RANGES,
    NUMPY,
    OF_DTYPE,
    Tensor,
    datatype_of_values,
    decode_inputs,
    encode_output,
)

KEY_INPUT = "key"
HEADER_LENGTH = "inference-header-content-length"
_BOOLISH = ("BOOL", *(d for d in NUMPY if d.startswith(("INT", "UINT"))))
_NUMERIC = tuple(d for d in NUMPY if d != "BOOL")
_FITS = {"string": ("BYTES",), "bool": _BOOLISH, "float64": _NUMERIC, "float32": _NUMERIC,
         "int64": _NUMERIC, "int32": _NUMERIC}
#: the order datatypes are named in when an error lists those an input takes.
_NAMED_ORDER = ("BYTES", "BOOL", "FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8",
                "UINT64", "UINT32", "UINT16", "UINT8")


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: its examples and what the response should look like."""

    id: str | None
    examples: list[Example]
    outputs: tuple[str, ...] | None
    #: outputs whose request said binary_data true or false; the others follow `binary_all`.
    binary: Mapping[str, bool]
    binary_all: bool
    parameters: Mapping[str, Any]
    #: outputs asked for as classifications (the classification extension): name -> how many classes.
    classification: Mapping[str, int] = field(default_factory=dict)


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary data after it (empty without the binary extension)."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InputError(f"Inference-Header-Content-Length {header_length!r} does not fit a body of "
                         f"{len(body)} bytes")
    n = int(header_length)
    return body[:n], body[n:]


def parse_infer(doc: Any, binary: bytes, schema: Schema | None, *, ignore_unknown: bool,
                max_instances: int, cast: RowCaster | None = None) -> InferRequest:
    """A decoded infer request. `cast`: the schema's `RowCaster` (the server keeps one; made here if not
    given)."""
    one = _one_row(doc, binary, schema, cast)
    if one is not None:
        return one
    if not isinstance(doc, dict):
        raise InputError('the body must be a JSON object {"inputs": [...]}')
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError(f"'id' must be a string, not {request_id!r}")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InputError("'parameters' must be an object")
    tensors = decode_inputs(doc.get("inputs"), binary)
    key_is_feature = schema is not None and KEY_INPUT in schema
    keys_tensor = next((t for t in tensors if t.name == KEY_INPUT and not key_is_feature), None)
    features = [t for t in tensors if t is not keys_tensor]
    n = _rows(keys_tensor, features)
    if n > max_instances:
        raise TooManyInstances(f"{n:,} rows in one request; the limit is {max_instances:,} (--max-instances)")
    keys = _keys(keys_tensor) if keys_tensor is not None else [None] * n
    if schema is None or (keys_tensor is not None and not features):
        if features and not ignore_unknown:
            names = ", ".join(repr(t.name) for t in features)
            raise InputError(f"unknown input tensor(s) {names}: this server has no model (static mode); "
                             f"send a BYTES tensor 'key' of store keys")
        if keys_tensor is None:
            raise InputError("send a BYTES tensor named 'key' holding the store keys of the rows")
        examples = [Example(k, None) for k in keys]
    else:
        rows = _feature_rows(features, cast or RowCaster(schema), ignore_unknown)
        examples = [Example(k, r) for k, r in zip(keys, rows, strict=True)]
    outputs, binary_outputs, classification = _requested(doc.get("outputs"))
    return InferRequest(request_id, examples, outputs, binary_outputs,
                        parameters.get("binary_data_output") is True, parameters, classification)


def _one_row(doc: Any, binary: bytes, schema: Schema | None, cast: RowCaster | None) -> InferRequest | None:
    """The commonest request, decoded without the general path's generic steps, or None for any other:
    ``{"inputs": [{"name", "shape": [1, n_features], "datatype": "FP64", "data": [n_features numbers]}]}``
    (an ``"id"`` string allowed, nothing else), a 2-D tensor under a name that is neither a feature nor
    ``key``, for a model whose features are all numeric. It accepts only what the general path accepts,
    and returns what it would (a differential test checks); a row the cast refuses goes to the general
    path for its error. Per request: 8 µs -> 2 µs."""
    if binary or cast is None or schema is None or type(doc) is not dict:
        return None
    request_id = doc.get("id")
    inputs = doc.get("inputs")
    if (len(doc) != 1 + ("id" in doc) or (request_id is not None and type(request_id) is not str)
            or type(inputs) is not list or len(inputs) != 1):
        return None
    spec = inputs[0]
    if type(spec) is not dict or len(spec) != 4 or spec.get("datatype") != "FP64":
        return None
    name, shape, data = spec.get("name"), spec.get("shape"), spec.get("data")
    k = len(schema.names)
    if (type(name) is not str or not name or name == KEY_INPUT or name in schema
            or type(shape) is not list or len(shape) != 2 or type(shape[0]) is not int or shape[0] != 1
            or type(shape[1]) is not int or shape[1] != k or type(data) is not list or len(data) != k
            or not cast.dtypes <= _NUMERIC_DTYPES or not set(map(type, data)) <= _INT_OR_FLOAT):
        return None
    try:
        row = cast.values(list(data))
    except SchemaError:
        return None
    return InferRequest(request_id, [Example(None, row)], None, {}, False, {})


_NUMERIC_DTYPES = frozenset(dtype for dtype, fits in _FITS.items() if "FP64" in fits)
_INT_OR_FLOAT = frozenset({int, float})


def _rows(keys: Tensor | None, features: list[Tensor]) -> int:
    counts = {t.name: t.shape[0] for t in ([keys] if keys else []) + features}
    if len(set(counts.values())) > 1:
        raise InputError(f"input tensors disagree on the number of rows (shape[0]): "
                         f"{', '.join(f'{k}={v}' for k, v in counts.items())}")
    n = next(iter(counts.values()))
    if n == 0:
        raise InputError("the input tensors have no rows (shape[0] is 0)")
    return n


def _keys(t: Tensor) -> list[str | None]:
    if t.datatype == "BYTES" or t.datatype in INTEGER_RANGES:
        if len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1):
            return [key_text([v]) for v in t.data]
        if len(t.shape) == 2 and t.shape[1] > 1:
            k = t.shape[1]
            return [key_text(t.data[i:i + k]) for i in range(0, len(t.data), k)]
    raise InputError(f"input tensor 'key' must be BYTES (or integers) of shape [n] or [n, k], not "
                     f"{t.datatype} {list(t.shape)}")


def _feature_rows(tensors: list[Tensor], cast: RowCaster, ignore_unknown: bool) -> list[list[Any]]:
    schema = cast.schema
    names = schema.names
    if len(tensors) == 1 and tensors[0].name not in schema:
        t = tensors[0]
        if len(t.shape) != 2 or t.shape[1] != len(names):
            raise InputError(f"input tensor {t.name!r} is not a model input; a 2-D tensor of all inputs "
                             f"must have shape [n, {len(names)}] (inputs: {', '.join(names)}), "
                             f"not {list(t.shape)}")
        if t.datatype != "BYTES" and not all(t.datatype in _FITS[dtype] for dtype in cast.dtypes):
            every = [d for d in NUMPY if all(d in _FITS[dtype] for dtype in cast.dtypes)]
            raise InputError(f"input tensor {t.name!r}: datatype {t.datatype} does not fit every input "
                             f"({', '.join(f'{f.name}: {f.dtype}' for f in schema.fields)}); "
                             f"use {_named(['BYTES', *every])}")
        k = len(names)
        if t.shape[0] == 1:  # one row: the data is the row
            try:
                return [cast.values(list(t.data))]
            except SchemaError as exc:
                raise SchemaError(f"row 0: {exc}") from None
        columns = [t.data[j::k] for j in range(k)]
    else:
        unknown = [t.name for t in tensors if t.name not in schema]
        if unknown and not ignore_unknown:
            raise SchemaError(f"unknown input tensor(s) {', '.join(map(repr, unknown))} (the model's inputs "
                              f"are {', '.join(names)})")
        by_name = {t.name: t for t in tensors}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise SchemaError(f"missing input tensor(s) {', '.join(map(repr, missing))} (the model's inputs "
                              f"are {', '.join(names)}; or send one [n, {len(names)}] tensor)")
        for f in schema.fields:
            t = by_name[f.name]
            if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
                raise InputError(f"input tensor {f.name!r} must have shape [n] or [n, 1], "
                                 f"not {list(t.shape)}")
            if t.datatype not in _FITS[f.dtype]:
                raise InputError(f"input tensor {f.name!r}: datatype {t.datatype} does not fit feature "
                                 f"{f.name!r} ({f.dtype}); use {_named(_FITS[f.dtype])}")
        columns = [by_name[name].data for name in names]
    rows: list[list[Any]] = []
    for i, values in enumerate(zip(*columns, strict=True)):
        try:
            rows.append(cast.values(list(values)))
        except SchemaError as exc:
            raise SchemaError(f"row {i}: {exc}") from None
    return rows


def _named(datatypes: Sequence[str]) -> str:
    """'FP64, FP32 or INT64': `datatypes` in `_NAMED_ORDER`, for an error that says which fit."""
    names = sorted(datatypes, key=_NAMED_ORDER.index)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _requested(outputs: Any) -> tuple[tuple[str, ...] | None, dict[str, bool], dict[str, int]]:
    if outputs is None:
        return None, {}, {}
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise InputError('"outputs" must be a list of objects {"name": ..., "parameters": {...}}')
    binary: dict[str, bool] = {}
    classification: dict[str, int] = {}
    for o in outputs:
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise InputError(f"output {o['name']!r}: 'parameters' must be an object")
        count = params.get("classification")
        if count is not None and count != 0:  # (0: none, as tritonclient sends for class_count=0)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InputError(f"output {o['name']!r}: 'classification' must be a whole number of classes "
                                 f">= 1, not {count!r}")
            classification[o["name"]] = count
        if isinstance(params.get("binary_data"), bool):
            binary[o["name"]] = params["binary_data"]
    return tuple(o["name"] for o in outputs), binary, classification


def encode_infer(req: InferRequest, answers: list[Answer], model_name: str, model_version: str,
                 columns: Sequence[tuple[str, str | None]]) -> tuple[bytes, int | None]:
    """The response body and, with binary outputs, the length of its JSON header.

    `columns`: every output (name, v2 datatype or None to infer it from the values)."""
    if req.outputs is None and not req.binary and not req.binary_all:  # every output, as JSON
        # (no outputs named: no classification either)
        plain: list[dict[str, Any]] = []
        for name, known_type in columns:
            values = [a.values.get(name) for a in answers]
            plain.append({"name": name, "datatype": known_type or datatype_of_values(values),
                          "shape": [len(values)], "data": values})
        return orjson.dumps(_response(req, answers, model_name, model_version, plain)), None
    known = dict(columns)
    names = list(req.outputs) if req.outputs is not None else [name for name, _ in columns]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(map(repr, unknown))}; the outputs are "
                         f"{', '.join(known)}")
    outputs, blobs = [], []
    for name in names:
        as_binary = req.binary.get(name, req.binary_all)
        if name in req.classification:
            out, raw = _classification(name, req.classification[name], answers, [c for c, _ in columns],
                                       as_binary)
        else:
            values = [a.values.get(name) for a in answers]
            datatype = known[name] or datatype_of_values(values)
            out, raw = encode_output(name, datatype, values, as_binary)
        outputs.append(out)
        if raw:
            blobs.append(raw)
    header = orjson.dumps(_response(req, answers, model_name, model_version, outputs))
    if not any("parameters" in o for o in outputs):
        return header, None
    return header + b"".join(blobs), len(header)


def _classification(name: str, count: int, answers: list[Answer], columns: list[str],
                    binary: bool) -> tuple[dict[str, Any], bytes]:
    """The classification extension (as Triton answers it) for a classifier's `label` or ``proba_<class>``
    output: per row, its `count` most probable classes (at most all of them), most probable first (the
    lower class index first on a tie), each as ``"<probability>:<class index>:<class>"``; a BYTES tensor
    ``[rows, count]``. The class index is the class's place among the ``proba_<class>`` outputs."""
    classes = [c for c in columns if c.startswith("proba_")]
    if not classes or (name != "label" and name not in classes):
        raise InputError(f"output {name!r}: the classification extension ranks a classifier's classes by "
                         f"probability; ask it of 'label' or a proba_<class> output"
                         + ("" if classes else " (this model has no proba_<class> outputs)"))
    count = min(count, len(classes))
    flat: list[str] = []
    for a in answers:
        probabilities = [a.values.get(c) for c in classes]
        ranked = sorted(range(len(classes)), key=lambda i: -_rank(probabilities[i]))
        flat.extend(f"{probabilities[i]!r}:{i}:{classes[i][6:]}" for i in ranked[:count])
    out, raw = encode_output(name, "BYTES", flat, binary)
    out["shape"] = [len(answers), count]
    return out, raw


def _rank(probability: Any) -> float:
    return float(probability) if isinstance(probability, int | float) else -math.inf


def _response(req: InferRequest, answers: list[Answer], model_name: str, model_version: str,
              outputs: list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if req.id is not None:
        doc["id"] = req.id
    doc["parameters"] = {"provenance": [a.provenance for a in answers]}
    doc["outputs"] = outputs
    return doc


def output_columns(schema: Schema | None, store_columns: Sequence[str]) -> list[tuple[str, str | None]]:
    """The outputs and their datatypes: the model's, or in static mode the store's (datatype inferred)."""
    if schema is not None:
        return [(f.name, OF_DTYPE[f.dtype]) for f in schema.fields]
    return [(name, None) for name in store_columns]
