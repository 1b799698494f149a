"""The golden-set gate: known examples whose predictions must come out as expected.

A golden file (Parquet, CSV or JSON lines) holds, per row, either the predictions' key column(s) or, when
the predictions are keyed by feature hash, the model's feature columns (hashed here exactly as the batch
runner does: `augury.schema.conform`, then `augury.keys.feature_keys`); and expected values in columns
named like output columns. A null expected value is not checked. A row agrees when every checked column
matches: labels and other non-float values exactly (as text, `augury.keys.key_text`), floats within
`rtol` relative or `atol` absolute. A golden row absent from the predictions disagrees.

The golden file is read whole, so it is limited to `MAX_GOLDEN_ROWS`; the predictions are streamed
through `add`, keeping only the rows whose key is golden.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq

from augury.errors import ConfigError, SchemaError
from augury.keys import column_keys, feature_keys, key_text
from augury.schema import conform
from augury.verify.config import GoldenCheck
from augury.verify.report import GateResult, failed, passed
from augury.verify.source import Layout

MAX_GOLDEN_ROWS = 1_000_000
SHOWN = 5
GATE = "golden"
ABSENT = "absent from the predictions"


def read_golden(check: GoldenCheck, types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """The golden file as a table; an unreadable file or unknown format is a `ConfigError`.

    CSV columns named in `types` are read with those types (so a text key "007" stays "007").
    """
    path = check.path
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix == ".csv":
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=dict(types or {})))
        elif suffix in (".jsonl", ".ndjson", ".json"):
            table = pjson.read_json(path)
        else:
            raise ConfigError(f"golden file {path}: unknown format {suffix!r} (use .parquet, .csv or .jsonl)")
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"golden file {path} cannot be read: {exc}") from exc
    if table.num_rows > MAX_GOLDEN_ROWS:
        raise ConfigError(f"golden file {path} has {table.num_rows} rows; the limit is {MAX_GOLDEN_ROWS}")
    return table


@dataclass(frozen=True)
class _Row:
    index: int
    expected: Mapping[str, Any]


class GoldenMatcher:
    """Collects the predictions of golden rows from a stream of batches, then scores their agreement.

    `problem` is set when the golden rows cannot be matched to these predictions (missing key or feature
    columns, unknown expected columns); the gate then fails with that reason.
    """

    def __init__(self, check: GoldenCheck, layout: Layout) -> None:
        self.check = check
        self.layout = layout
        self.problem: str | None = None
        self.expected_columns: list[str] = []
        self._rows: dict[str, _Row] = {}
        self._found: dict[str, dict[str, Any]] = {}
        self._keys = pa.array([], type=pa.string())
        self._first: pa.Array = self._keys  # golden values of the first key column: a cheap pre-filter
        self._prepare(read_golden(check, layout.key_types))

    def _prepare(self, golden: pa.Table) -> None:
        layout = self.layout
        names = golden.schema.names
        inputs = layout.inputs
        if layout.key_columns and all(k in names for k in layout.key_columns):
            used = set(layout.key_columns)
            try:
                golden = _cast_keys(golden, layout.key_types)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                self.problem = f"golden key columns do not fit the predictions' key types: {exc}"
                return
            keys = column_keys(golden, list(layout.key_columns))
            index = np.arange(golden.num_rows)
            self._first = pc.unique(golden.column(layout.key_columns[0]))
        elif layout.key_kind == "hash" and inputs is not None and all(n in names for n in inputs.names):
            used = set(inputs.names)
            try:
                conformed = conform(golden, inputs)
            except SchemaError as exc:
                self.problem = f"golden rows cannot be hashed: {exc}"
                return
            bad = [f"golden row {e.index + 1}: {e.reason}" for e in conformed.errors]
            if bad:
                self.problem = f"{len(bad)} golden row(s) cannot be scored: {'; '.join(bad[:SHOWN])}"
                return
            keys = feature_keys(conformed.batch, inputs)
            index = conformed.indices
            self._first = keys
        else:
            self.problem = self._why_unmatchable(names)
            return
        ignorable = used | set(inputs.names if inputs is not None else ())
        outputs = {o.name for o in layout.outputs}
        self.expected_columns = [n for n in names if n not in ignorable]
        unknown = [n for n in self.expected_columns if n not in outputs]
        if unknown or not self.expected_columns:
            self.problem = (f"golden column(s) {', '.join(unknown)} are not output columns"
                            if unknown else "the golden file has no expected (output) columns")
            return
        expected = golden.select(self.expected_columns).to_pylist()
        for i, k in zip(index.tolist(), keys.to_pylist(), strict=True):
            if k in self._rows:
                self.problem = f"golden rows {self._rows[k].index + 1} and {i + 1} have the same key {k}"
                return
            self._rows[k] = _Row(i, expected[i])
        self._keys = pa.array(list(self._rows), type=pa.string())

    def _why_unmatchable(self, names: list[str]) -> str:
        layout = self.layout
        if not layout.key_columns:
            return ("the predictions file names no key columns (no augury metadata), "
                    "so golden rows cannot be found")
        need = f"key column(s) {', '.join(layout.key_columns)}"
        if layout.key_kind == "hash":
            if layout.inputs is None:
                return f"the golden file needs {need}: the predictions' metadata has no input schema to hash"
            need += f" or all feature columns ({', '.join(layout.inputs.names)})"
        return f"the golden file needs {need}; it has {', '.join(names)}"

    @property
    def columns(self) -> list[str]:
        """The predictions columns `add` needs."""
        return [*self.layout.key_columns, *self.expected_columns]

    def add(self, batch: pa.RecordBatch) -> None:
        """Keep the expected columns of the rows of `batch` whose key is golden."""
        if self.problem is not None or not self._rows:
            return
        key_columns = list(self.layout.key_columns)
        candidates = pc.is_in(batch.column(key_columns[0]), value_set=self._first)
        if not pc.any(candidates).as_py():
            return
        batch = batch.filter(candidates)
        keys = column_keys(batch, key_columns)
        hits = pc.indices_nonzero(pc.is_in(keys, value_set=self._keys))
        values = batch.select(self.expected_columns).take(hits).to_pylist()
        for k, row in zip(keys.take(hits).to_pylist(), values, strict=True):
            self._found[k] = row

    def result(self) -> GateResult:
        """The gate's outcome once every batch was added."""
        c = self.check
        threshold = c.min_agreement
        if self.problem is not None:
            return failed(GATE, self.problem, threshold=threshold)
        total = len(self._rows)
        if not total:
            return failed(GATE, f"the golden file {c.path} has no rows", 0, threshold)
        floats = {o.name for o in self.layout.outputs if o.is_float}
        mismatches: list[dict[str, Any]] = []
        for k, row in self._rows.items():
            got = self._found.get(k)
            reason = ABSENT if got is None else self._compare(row.expected, got, floats)
            if reason:
                mismatches.append({"golden_row": row.index + 1, "key": k, "reason": reason})
        agreed = total - len(mismatches)
        agreement = agreed / total
        missing = sum(1 for m in mismatches if m["reason"] == ABSENT)
        details = {"rows": total, "agreed": agreed, "missing": missing, "path": str(c.path),
                   "first_disagreements": mismatches[:SHOWN]}
        shown = "; ".join(f"row {m['golden_row']} ({m['key']}): {m['reason']}" for m in mismatches[:SHOWN])
        if agreement >= threshold:
            return passed(GATE, f"{agreed}/{total} golden rows agree", agreement, threshold, details)
        return failed(GATE, f"agreement is {agreement:.4g} ({agreed}/{total}) < {threshold:g}; {shown}",
                      agreement, threshold, details)

    def _compare(self, expected: Mapping[str, Any], got: Mapping[str, Any], floats: set[str]) -> str:
        c = self.check
        for col, exp in expected.items():
            if exp is None:
                continue
            val = got.get(col)
            if col in floats and isinstance(exp, int | float) and not isinstance(exp, bool):
                ok = val is not None and (_both_nan(exp, val) or math.isclose(val, exp, rel_tol=c.rtol,
                                                                             abs_tol=c.atol))
            else:
                ok = val is not None and key_text([val]) == key_text([exp])
            if not ok:
                return f"{col}: expected {exp!r}, got {val!r}"
        return ""


def _cast_keys(table: pa.Table, types: Mapping[str, pa.DataType]) -> pa.Table:
    for name, t in types.items():
        i = table.schema.get_field_index(name)
        if table.schema.field(i).type != t:
            table = table.set_column(i, name, pc.cast(table.column(i), t))
    return table


def _both_nan(a: Any, b: Any) -> bool:
    return isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
