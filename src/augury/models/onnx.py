"""ONNX models, run with onnxruntime on the CPU.

Inputs: one 2-D numeric tensor ``[N, k]`` is ``k`` positional features ``f0..f{k-1}`` of the tensor's
type (rename them with a manifest); otherwise each input, ``[N]`` or ``[N, 1]``, is one feature with the
input's name and type (``tensor(string)`` -> ``string``).

Outputs: a label tensor (int64 or string, one per row) and a probability tensor (``[N, k]``, or the
ZipMap sequence of maps skl2onnx writes by default) make a classifier; its label is the graph's own label
output. Class labels come from the graph (read with the ``onnx`` package when it is installed: a
classifier node's ``classlabels_*``, or the constant table skl2onnx maps class positions through; a
manifest's ``classes`` must then repeat them), else from the manifest's ``classes``. One
float tensor makes a regressor (``[N]``/``[N, 1]``: ``value``; ``[N, m]``: ``value_0..``).

`threads` sets ``intra_op_num_threads`` (default 1). ONNX Runtime's CPU matrix kernels take another code
path for a single row, whose float32 results can differ in the last bit; a 1-row batch is therefore scored
as two copies of the row, so an example gets the same answer alone or in a batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from augury.errors import MissingExtraError, ModelLoadError, PredictionError
from augury.models._common import (
    Array,
    Head,
    LoadContext,
    class_array,
    classifier_batch,
    column_values,
    empty_batch,
    numeric_matrix,
    python_classes,
    value_batch,
)
from augury.models.base import Model, ModelInfo
from augury.models.evaluator import ONNXRUNTIME
from augury.models.manifest import manifest_path

#: ONNX tensor types -> schema dtypes, and the NumPy dtype fed to the session.
_TENSORS: dict[str, tuple[str, Any]] = {
    "tensor(float)": ("float32", np.float32),
    "tensor(double)": ("float64", np.float64),
    "tensor(int64)": ("int64", np.int64),
    "tensor(int32)": ("int32", np.int32),
    "tensor(bool)": ("bool", np.bool_),
    "tensor(string)": ("string", object),
}
_FLOAT_TENSORS = ("tensor(float)", "tensor(double)")
_LABEL_ATTRIBUTES = ("classlabels_int64s", "classlabels_ints", "classlabels_strings")


def load_onnx(ctx: LoadContext) -> Model:
    """Open an ONNX session on `ctx.path` and describe its inputs and outputs."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingExtraError(f"loading {ctx.path}", "onnx", "onnxruntime") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = ctx.threads or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(ctx.path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(
            f"{ctx.path} is not a valid ONNX model ({type(exc).__name__}: {exc}); "
            f"export it again (e.g. with skl2onnx)"
        ) from exc
    return OnnxModel.wrap(session, ctx)


class OnnxModel:
    """An onnxruntime session behind the `Model` contract (build it with `wrap`)."""

    def __init__(
        self,
        session: Any,
        info: ModelInfo,
        feeds: list[tuple[str, Any, int]],
        matrix: bool,
        fetch: list[str],
        zipmap: bool,
    ) -> None:
        self._session = session
        self._info = info
        self._feeds = feeds  # (input name, numpy dtype, rank); one entry in matrix mode
        self._matrix = matrix
        self._fetch = fetch  # output names: [label, probabilities] or [label] or [values]
        self._zipmap = zipmap
        self._class_values = class_array(info.classes)

    @property
    def info(self) -> ModelInfo:
        return self._info

    @classmethod
    def wrap(cls, session: Any, ctx: LoadContext) -> OnnxModel:
        ins = session.get_inputs()
        matrix = (
            len(ins) == 1
            and len(ins[0].shape) == 2
            and ins[0].type in _TENSORS
            and ins[0].type != "tensor(string)"
        )
        feeds: list[tuple[str, Any, int]] = []
        derived: list[tuple[str, str]] | None = []
        for i in ins:
            dtype, np_dtype = _tensor(i.type, f"{ctx.path}: input {i.name!r}")
            feeds.append((i.name, np_dtype, len(i.shape)))
            if matrix:
                k = i.shape[1]
                derived = [(f"f{j}", dtype) for j in range(k)] if isinstance(k, int) else None
            elif len(i.shape) == 1 or (len(i.shape) == 2 and i.shape[1] == 1):
                assert derived is not None
                derived.append((i.name, dtype))
            else:
                raise ModelLoadError(
                    f"{ctx.path}: input {i.name!r} has shape {i.shape}; augury feeds either "
                    f"one [N, k] tensor or one [N] or [N, 1] tensor per feature"
                )
        inputs = ctx.input_schema(derived, False, names_fixed=not matrix)
        detected, fetch, zipmap = _detect_head(session, ctx)
        head = ctx.head(detected, classes_known=True)
        if detected.classes and not head.proba:
            fetch = fetch[:1]
        info = ctx.info("onnx", inputs, head, {"onnx_outputs": list(fetch)}, evaluator=ONNXRUNTIME)
        return cls(session, info, feeds, matrix, fetch, zipmap)

    def predict(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        outputs = self._info.outputs
        n = batch.num_rows
        if n == 0:
            return empty_batch(outputs)
        if n == 1:  # see the module docstring: a single row takes another kernel path
            batch = pa.RecordBatch.from_arrays(
                [pa.concat_arrays([c, c]) for c in batch.columns], schema=batch.schema
            )
        result = [r[:n] for r in self._session.run(self._fetch, self._inputs(batch))]
        if not self._info.classes:
            return value_batch(outputs, result[0], n)
        labels = np.asarray(result[0]).reshape(-1)
        if not np.isin(labels, self._class_values).all():
            unknown = sorted({str(v) for v in labels[~np.isin(labels, self._class_values)]})
            raise PredictionError(
                f"the ONNX label output holds {', '.join(unknown)}, not among the classes "
                f"{list(self._info.classes)}; fix 'classes' in the manifest"
            )
        if len(result) == 1:
            return classifier_batch(outputs, labels, None)
        proba = result[1]
        if self._zipmap:
            proba = [[row[c] for c in self._info.classes] for row in proba]
        return classifier_batch(outputs, labels, proba)

    def _inputs(self, batch: pa.RecordBatch) -> dict[str, Array]:
        if self._matrix:
            name, dtype, _ = self._feeds[0]
            return {name: numeric_matrix(batch, dtype)}
        feed: dict[str, Array] = {}
        for name, dtype, rank in self._feeds:  # one feature per input, of the same name
            values = column_values(batch.column(name))
            if dtype is not object:
                if values.dtype == object:
                    raise PredictionError(
                        f"feature {name!r} has missing values, which its ONNX input cannot hold"
                    )
                values = values.astype(dtype, copy=False)
            feed[name] = values if rank == 1 else values.reshape(-1, 1)
        return feed


def _tensor(onnx_type: str, where: str) -> tuple[str, Any]:
    try:
        return _TENSORS[onnx_type]
    except KeyError:
        raise ModelLoadError(f"{where} has type {onnx_type}; augury feeds {', '.join(_TENSORS)}") from None


def _detect_head(session: Any, ctx: LoadContext) -> tuple[Head, list[str], bool]:
    """The head, the outputs to fetch, and whether probabilities come as a ZipMap."""
    outs = session.get_outputs()
    if len(outs) == 1 and outs[0].type in _FLOAT_TENSORS and len(outs[0].shape) in (1, 2):
        shape = outs[0].shape
        m = 1 if len(shape) == 1 else shape[1]
        if not isinstance(m, int):
            raise ModelLoadError(
                f"{ctx.path}: output {outs[0].name!r} has shape {shape}; the number of "
                f"values per row must be fixed"
            )
        return Head("regression", n_values=m), [outs[0].name], False
    labels = [o for o in outs if o.type in ("tensor(int64)", "tensor(string)") and len(o.shape) == 1]
    probas = [
        o for o in outs if (o.type in _FLOAT_TENSORS and len(o.shape) == 2) or o.type.startswith("seq(map(")
    ]
    if len(outs) != 2 or len(labels) != 1 or len(probas) != 1:
        described = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outs)
        raise ModelLoadError(
            f"{ctx.path}: unsupported ONNX outputs ({described}); augury reads one float "
            f"tensor (regression) or a label and a probability tensor (classification)"
        )
    label, proba = labels[0], probas[0]
    classes = _classes(ctx)
    width = proba.shape[1] if len(proba.shape) == 2 else None
    if isinstance(width, int) and len(classes) != width:
        raise ModelLoadError(f"{ctx.path}: {len(classes)} class labels for {width} probability columns")
    string_labels = label.type == "tensor(string)"
    if string_labels != all(isinstance(c, str) for c in classes):
        raise ModelLoadError(
            f"{ctx.path}: class labels {list(classes)} do not match the label output type {label.type}"
        )
    zipmap = proba.type.startswith("seq(map(")
    return Head("classification", classes, proba=True), [label.name, proba.name], zipmap


def _classes(ctx: LoadContext) -> tuple[Any, ...]:
    """The class labels the graph's classifier node stores (read with ``onnx`` when it is installed),
    else the manifest's ``classes``."""
    declared = ctx.manifest.classes if ctx.manifest is not None else None
    hint = f"list them as 'classes' in {manifest_path(ctx.path)}"
    try:
        import onnx
    except ImportError:
        if declared is not None:
            return declared
        raise ModelLoadError(
            f"cannot tell the class labels of ONNX classifier {ctx.path}: {hint} "
            f"(or install the 'onnx' package to read them from the graph)"
        ) from None
    try:
        graph = onnx.load(str(ctx.path), load_external_data=False).graph
    except Exception as exc:
        raise ModelLoadError(f"{ctx.path}: onnx cannot read the graph ({type(exc).__name__}: {exc})") from exc
    found = _graph_classes(graph, onnx)
    if found is not None:
        return found
    if declared is not None:
        return declared
    raise ModelLoadError(f"cannot tell the class labels of ONNX classifier {ctx.path}: {hint}")


def _graph_classes(graph: Any, onnx: Any) -> tuple[Any, ...] | None:
    """Labels stored on a classifier node (``classlabels_*``), else the constant table an
    ``ArrayFeatureExtractor`` maps class positions through (skl2onnx's graphs for float64 inputs)."""
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in _LABEL_ATTRIBUTES:
                if attribute.strings:
                    return tuple(s.decode("utf-8") for s in attribute.strings)
                return tuple(int(i) for i in attribute.ints)
    constants = {t.name: t for t in graph.initializer}
    tables = [
        constants[n.input[0]]
        for n in graph.node
        if n.op_type == "ArrayFeatureExtractor" and n.input and n.input[0] in constants
    ]
    if len(tables) != 1:
        return None
    values = onnx.numpy_helper.to_array(tables[0]).reshape(-1)
    if values.dtype.kind in "OSU":
        return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)
    return python_classes(values) if values.dtype.kind in "iu" else None
