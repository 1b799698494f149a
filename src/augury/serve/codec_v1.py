"""The simple JSON API (KServe v1 / TF Serving style): instances in, predictions and provenance out.

Request: ``{"instances": [{feature: value, ...}, ...]}`` (an optional ``"parameters": {"deadline_ms": N}``).
An instance may carry a ``key`` (a string, a number, or a list of them for several key columns, as
`keys.key_text` writes them); an instance with only a key is a pure lookup. Each instance's features are
cast with `schema.cast_row` (through `serve.casting`): a missing feature, an unknown field (unless unknown
fields are ignored), a value that cannot be cast, or a NaN/null the model cannot take is a 400 naming the
instance and field.
If the model itself has a feature called ``key``, the field is a feature, and examples are found in the
store by their feature hash.

In static mode there is no schema to cast with: a keyed instance's other fields are kept as sent
(`Example.sent`), for the router to compare with the features its stored prediction was computed from.

Response: ``{"predictions": [{column: value, ...}, ...], "provenance": [{...}, ...]}``, aligned with the
instances. In static mode, a request of several keys is answered even when the store lacks some: a
missing key's place holds ``{"error": "not found", "key": ...}`` and its provenance is null (and the
``X-Augury-Misses`` header counts them); one key alone that is missing is a 404. Likewise a key sent with
features other than those its stored prediction was computed from: ``{"error": "features changed",
"key": ...}`` in its place, a 409 alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from augury.errors import InputError, SchemaError
from augury.keys import key_text
from augury.schema import Schema
from augury.serve.answers import Answer, Conflict, Example
from augury.serve.casting import RowCaster
from augury.serve.errors import TooManyInstances

KEY_FIELD = "key"
_TOP_LEVEL = ("instances", "parameters")


def parse_predict(doc: Any, schema: Schema | None, *, ignore_unknown: bool, max_instances: int,
                  cast: RowCaster | None = None) -> tuple[list[Example], Mapping[str, Any]]:
    """The examples of a v1 predict request, and its ``parameters`` (possibly empty). `cast`: the
    schema's `RowCaster` (the server keeps one; made here if not given)."""
    if not isinstance(doc, dict):
        raise InputError(f'the body must be a JSON object {{"instances": [...]}}, not {_kind(doc)}')
    unknown = [k for k in doc if k not in _TOP_LEVEL]
    if unknown and not ignore_unknown:
        raise InputError(f"unknown top-level field(s): {', '.join(map(repr, unknown))} "
                         f"(expected 'instances' and optionally 'parameters')")
    instances = doc.get("instances")
    if not isinstance(instances, list):
        raise InputError('the body needs "instances": a list of objects, one per example')
    if not instances:
        raise InputError('"instances" is empty; send at least one instance')
    if len(instances) > max_instances:
        raise TooManyInstances(f"{len(instances):,} instances in one request; the limit is {max_instances:,} "
                               f"(--max-instances)")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InputError(f'"parameters" must be an object, not {_kind(parameters)}')
    keyed = schema is None or KEY_FIELD not in schema
    if cast is None and schema is not None:
        cast = RowCaster(schema)
    return [_example(i, inst, cast, keyed, ignore_unknown) for i, inst in enumerate(instances)], parameters


def _example(i: int, inst: Any, cast: RowCaster | None, keyed: bool, ignore_unknown: bool) -> Example:
    if not isinstance(inst, dict):
        raise InputError(f"instance {i} must be an object of feature values, not {_kind(inst)}")
    key = None
    if keyed and KEY_FIELD in inst:
        key = parse_key(inst.pop(KEY_FIELD), f"instance {i}")
        if not inst:
            return Example(key, None)
    if cast is None:
        if key is None:
            raise InputError(f"instance {i} has no 'key': this server has no model (static mode), so it can "
                             f"only look predictions up by key")
        return Example(key, None, inst)  # (cast by the schema its store version recorded, if it did)
    try:
        return Example(key, cast(inst, ignore_unknown))
    except SchemaError as exc:
        raise SchemaError(f"instance {i}: {exc}") from None


def parse_key(value: Any, where: str) -> str:
    """A store key from JSON: a string, a number, or a list of them (several key columns)."""
    scalar = (str, int, float, bool)
    if isinstance(value, scalar):
        return key_text([value])
    if isinstance(value, list) and value and all(isinstance(v, scalar) for v in value):
        return key_text(value)
    raise InputError(f"{where}: 'key' must be a string, a number or a list of them, not {_kind(value)}")


def encode_predict(answers: Sequence[Answer | Conflict | None], examples: Sequence[Example],
                   ) -> dict[str, Any]:
    """The response to `examples`; a None answer (a static miss) or a `Conflict` (a static key sent with
    other features) is marked in its place."""
    return {"predictions": [a.values if isinstance(a, Answer)
                            else {"error": "not found" if a is None else "features changed", "key": ex.key}
                            for a, ex in zip(answers, examples, strict=True)],
            "provenance": [a.provenance if isinstance(a, Answer) else None for a in answers]}


def encode_lookup(key: str, answer: Answer) -> dict[str, Any]:
    return {"key": key, "prediction": answer.values, "provenance": answer.provenance}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}")
