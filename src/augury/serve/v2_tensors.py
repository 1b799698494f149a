"""Open Inference Protocol (v2) tensors: JSON and binary data in, JSON and binary data out.

A tensor is ``{"name", "shape", "datatype", "data"}`` with its elements row-major, ``data`` flat or
nested. With the binary tensor data extension (what `tritonclient` sends by default) the JSON header is
the first ``Inference-Header-Content-Length`` bytes of the body, a tensor's ``parameters`` give its
``binary_data_size`` instead of ``data``, and the raw little-endian bytes follow the header in input order
(a BYTES element is a 4-byte little-endian length then that many UTF-8 bytes). Outputs are sent the same
way when asked for (``binary_data`` on an output, or ``binary_data_output`` on the request).

JSON elements must fit the datatype: BOOL takes true/false, the integer types integers in their range,
FP16/FP32/FP64 numbers (or null, a missing value), BYTES strings. Anything else is an `InputError`
naming the tensor.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from augury.errors import InputError

#: v2 datatypes and the NumPy dtype of their binary form (BYTES has none: length-prefixed strings).
NUMPY: dict[str, str] = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
DATATYPES = (*NUMPY, "BYTES")
INTEGER_RANGES = {
    name: (int(np.iinfo(np.dtype(code)).min), int(np.iinfo(np.dtype(code)).max))
    for name, code in NUMPY.items() if name.startswith(("INT", "UINT"))
}
#: v2 datatype of each schema dtype.
OF_DTYPE = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "int32": "INT32", "bool": "BOOL",
            "string": "BYTES"}


@dataclass(frozen=True, slots=True)
class Tensor:
    """A decoded input tensor: its elements as a flat row-major list of Python values."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: list[Any]



#: the JSON value types a float tensor takes (null: a missing value).
_NUMBER_TYPES = frozenset({int, float, type(None)})

def decode_inputs(inputs: Any, binary: bytes) -> list[Tensor]:
    """The request's ``inputs`` list, decoded (`binary`: the bytes after the JSON header, if any)."""
    if not isinstance(inputs, list) or not inputs:
        raise InputError('"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}')
    tensors: list[Tensor] = []
    offset = 0
    for i, spec in enumerate(inputs):
        tensor, offset = _decode(i, spec, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise InputError(f"the body has {len(binary) - offset} bytes of binary data that no input claims")
    names = [t.name for t in tensors]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"input tensor(s) given twice: {', '.join(dupes)}")
    return tensors


def _decode(i: int, spec: Any, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(spec, dict):
        raise InputError(f"input {i} must be an object with name, shape, datatype and data")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InputError(f"input {i} needs a non-empty string 'name'")
    where = f"input tensor {name!r}"
    shape = spec.get("shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise InputError(f"{where}: 'shape' must be a non-empty list of non-negative integers, not {shape!r}")
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise InputError(f"{where}: 'datatype' must be one of {', '.join(DATATYPES)}, not {datatype!r}")
    count = math.prod(shape)
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise InputError(f"{where}: 'parameters' must be an object")
    size = parameters.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise InputError(f"{where}: binary_data_size {size!r} does not fit the {len(binary)} bytes of "
                             f"binary data after the JSON header")
        data = _from_binary(where, datatype, binary[offset:offset + size], count)
        offset += size
    elif "data" in spec:
        data = _from_json(where, datatype, spec["data"])
    else:
        raise InputError(f"{where} has no 'data' (nor binary data)")
    if len(data) != count:
        raise InputError(f"{where}: shape {shape} holds {count} elements but {len(data)} were sent")
    return Tensor(name, tuple(shape), datatype, data), offset


def _flatten(where: str, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise InputError(f"{where}: 'data' must be a list (flat or nested row-major), "
                         f"not {type(data).__name__}")
    if list not in set(map(type, data)):  # flat already (JSON gives exact lists)
        return data
    flat: list[Any] = []
    stack: list[Any] = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            flat.append(v)
        else:
            stack.pop()
    return flat


def _from_json(where: str, datatype: str, data: Any) -> list[Any]:
    flat = _flatten(where, data)
    if datatype == "BYTES":
        ok = all(isinstance(v, str) for v in flat)
        want = "strings"
    elif datatype == "BOOL":
        ok = all(isinstance(v, bool) for v in flat)
        want = "true or false"
    elif datatype in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[datatype]
        ok = all(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in flat)
        want = f"integers from {lo} to {hi}"
    else:  # one type test per distinct type (bool is not int here: type(True) is bool)
        ok = set(map(type, flat)) <= _NUMBER_TYPES
        want = "numbers (or null for a missing value)"
    if not ok:
        bad = next(v for v in flat if not _fits(datatype, v))
        raise InputError(f"{where}: datatype {datatype} takes {want}, got {bad!r}")
    return flat


def _fits(datatype: str, v: Any) -> bool:
    if datatype == "BYTES":
        return isinstance(v, str)
    if datatype == "BOOL":
        return isinstance(v, bool)
    if datatype in INTEGER_RANGES:
        lo, hi = INTEGER_RANGES[datatype]
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def _from_binary(where: str, datatype: str, raw: bytes, count: int) -> list[Any]:
    if datatype == "BYTES":
        return _bytes_elements(where, raw)
    itemsize = np.dtype(NUMPY[datatype]).itemsize
    if len(raw) != count * itemsize:
        raise InputError(f"{where}: {len(raw)} bytes of binary data, but {count} {datatype} elements take "
                         f"{count * itemsize}")
    values: list[Any] = np.frombuffer(raw, dtype=NUMPY[datatype]).tolist()
    return values


def _bytes_elements(where: str, raw: bytes) -> list[Any]:
    out: list[Any] = []
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 4 > end:
            raise InputError(f"{where}: truncated BYTES element length at byte {pos}")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > end:
            raise InputError(f"{where}: BYTES element of {n} bytes runs past the end of its data")
        try:
            out.append(raw[pos:pos + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise InputError(f"{where}: BYTES element {len(out)} is not valid UTF-8") from None
        pos += n
    return out


def encode_output(name: str, datatype: str, values: Sequence[Any],
                  binary: bool) -> tuple[dict[str, Any], bytes]:
    """One output tensor of shape [n]: its JSON description, and its raw bytes when sent as binary."""
    out: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(values)]}
    raw = _to_binary(datatype, values) if binary else None
    if raw is None:
        out["data"] = list(values)
        return out, b""
    out["parameters"] = {"binary_data_size": len(raw)}
    return out, raw


def _to_binary(datatype: str, values: Sequence[Any]) -> bytes | None:
    """The binary form of `values`, or None when a value cannot go there (a null in an integer tensor)."""
    if datatype == "BYTES":
        parts = []
        for v in values:
            b = ("" if v is None else str(v)).encode("utf-8")
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    if any(v is None for v in values):
        if not datatype.startswith("FP"):
            return None
        values = [math.nan if v is None else v for v in values]
    return np.asarray(values, dtype=NUMPY[datatype]).tobytes()


def datatype_of_values(values: Sequence[Any]) -> str:
    """The v2 datatype of JSON-like values of unknown schema (static mode): BOOL, INT64, FP64 or BYTES."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "FP64"
    return "BYTES"
