"""Python functions as models: declare the schema with `function_model`, load with ``module:function``.

::

    @function_model(inputs={"x": "float64", "text": "string"}, outputs={"value": "float64"},
                    version="1", task="regression")
    def score(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"value": batch["x"] * 2.0}

    model = load_model("mypackage.scoring:score")

The function receives one 1-D array per input feature, all of the batch's length (numbers with their
schema dtype, missing values as NaN where allowed; strings as object arrays of ``str``), and returns a
dict of 1-D arrays, one per declared output (or a single array when there is one output), each of the
batch's length; a wrong shape or a value that does not fit the declared dtype is a `PredictionError`.
The decorated object is still callable, like the function it wraps.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from augury.errors import ConfigError, ModelLoadError, PredictionError
from augury.models._common import Array, column_values, empty_batch
from augury.models.base import TASKS, Model, ModelInfo
from augury.schema import Field, Schema, dtype_name

ScoreFn = Callable[[dict[str, Array]], Any]


@dataclass(frozen=True)
class FunctionModel:
    """A scoring function and its declared schema; calling it calls the function."""

    fn: ScoreFn
    inputs: Schema
    outputs: Schema
    version: str | None = None
    task: str = "other"
    classes: tuple[Any, ...] = ()

    def __call__(self, batch: dict[str, Array]) -> Any:
        return self.fn(batch)

    def to_model(self, *, name: str | None = None, source: str | None = None) -> Model:
        """This function as a `Model`: named `name` (default: the function's name), version as declared or
        a hash of the function's source code (its qualified name when the source cannot be read)."""
        qualname = f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', repr(self.fn))}"
        info = ModelInfo(
            name=name or str(getattr(self.fn, "__name__", qualname)),
            version=self.version or _source_version(self.fn, qualname),
            format="function",
            source=source or qualname,
            inputs=self.inputs,
            outputs=self.outputs,
            task=self.task,
            classes=self.classes,
        )
        return CallableModel(self, info)


def function_model(
    *,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
    version: str | None = None,
    task: str = "other",
    classes: Collection[Any] = (),
    allow_missing: Collection[str] = (),
) -> Callable[[ScoreFn], FunctionModel]:
    """Declare a scoring function's input and output schema (dtype names of `augury.schema.DTYPES`).

    `allow_missing` names the inputs that accept missing values. Raises `ConfigError` for an unknown
    dtype, task, or `allow_missing` name.
    """
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    unknown = sorted(set(allow_missing) - set(inputs))
    if unknown:
        raise ConfigError(f"allow_missing names unknown input(s): {', '.join(unknown)}")
    if not outputs:
        raise ConfigError("a function model needs at least one output")
    in_schema = Schema(tuple(Field(n, dtype_name(d), n in allow_missing) for n, d in inputs.items()))
    out_schema = Schema(tuple(Field(n, dtype_name(d)) for n, d in outputs.items()))

    def decorate(fn: ScoreFn) -> FunctionModel:
        return FunctionModel(fn, in_schema, out_schema, version, task, tuple(classes))

    return decorate


def load_callable(ref: str, *, name: str | None = None) -> Model:
    """Import ``module:attribute`` (the attribute may be dotted) and return it as a `Model`."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ModelLoadError(f"{ref!r} is not a file nor a 'module:function' reference")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ModelLoadError(f"cannot load {ref!r}: no module named {exc.name!r}") from exc
        raise ModelLoadError(f"cannot load {ref!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load {ref!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ModelLoadError(
                f"cannot load {ref!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if isinstance(obj, FunctionModel):
        return obj.to_model(name=name, source=ref)
    if callable(obj):
        raise ModelLoadError(
            f"{ref!r} is a plain callable with no declared schema; decorate it with "
            f"@augury.models.function_model(inputs={{'x': 'float64'}}, outputs={{'value': 'float64'}})"
        )
    raise ModelLoadError(
        f"{ref!r} is not callable (a {type(obj).__name__}); name a function declared "
        f"with @augury.models.function_model"
    )


def _source_version(fn: ScoreFn, qualname: str) -> str:
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = qualname
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class CallableModel:
    """A `FunctionModel` behind the `Model` contract."""

    def __init__(self, spec: FunctionModel, info: ModelInfo) -> None:
        self._spec = spec
        self._info = info

    @property
    def info(self) -> ModelInfo:
        return self._info

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        outputs = self._info.outputs
        n = batch.num_rows
        if n == 0:
            return empty_batch(outputs)
        data = {f.name: column_values(batch.column(f.name)) for f in self._info.inputs.fields}
        result = self._spec.fn(data)
        if not isinstance(result, Mapping):
            if len(outputs) != 1:
                raise PredictionError(
                    f"function model {self._info.name!r} returned one array but declares "
                    f"outputs {', '.join(outputs.names)}"
                )
            result = {outputs.names[0]: result}
        if sorted(result) != sorted(outputs.names):
            raise PredictionError(
                f"function model {self._info.name!r} returned {sorted(result)}, expected {outputs.names}"
            )
        return pa.RecordBatch.from_arrays(
            [self._column(result[f.name], f, n) for f in outputs.fields], schema=outputs.to_arrow()
        )

    def _column(self, values: Any, f: Field, n: int) -> pa.Array:
        a = np.asarray(values)
        if a.shape != (n,):
            raise PredictionError(
                f"function model {self._info.name!r}: output {f.name!r} has shape {a.shape}, expected ({n},)"
            )
        try:
            return pa.array(a.tolist() if a.dtype.kind in "OUS" else a).cast(f.arrow_type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise PredictionError(
                f"function model {self._info.name!r}: output {f.name!r} does not fit {f.dtype}: {exc}"
            ) from exc
