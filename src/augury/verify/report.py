"""The outcome of a verification: one `GateResult` per gate, and the new predictions' profile.

`Report.passed` is True when no gate failed (a skipped gate does not fail). `Report.to_dict()` is
JSON-able (non-finite floats become strings), for `--json` and for storing beside a version; the report is
also a rich renderable (`console.print(report)`), a table of gates with their observed values and
thresholds. `raise_if_failed` raises `VerificationFailed` carrying the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from augury.errors import VerificationFailed
from augury.verify.profile import Profile

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
_STYLE = {PASSED: "green", FAILED: "bold red", SKIPPED: "dim"}


@dataclass(frozen=True)
class GateResult:
    """One gate's outcome. `observed` and `threshold` are JSON-able; `details` holds per-column values.

    `message` starts with the gate's name. A failed gate's names the observed value and the threshold,
    e.g. "drift: PSI of proba_1 is 0.31 > 0.2"; a skipped gate's says why it did not run.
    """

    name: str
    status: str
    observed: Any = None
    threshold: Any = None
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "observed": jsonable(self.observed),
                "threshold": jsonable(self.threshold), "message": self.message,
                "details": jsonable(self.details)}


def passed(name: str, message: str, observed: Any = None, threshold: Any = None,
           details: Mapping[str, Any] | None = None) -> GateResult:
    return GateResult(name, PASSED, observed, threshold, f"{name}: {message}", details or {})


def failed(name: str, message: str, observed: Any = None, threshold: Any = None,
           details: Mapping[str, Any] | None = None) -> GateResult:
    return GateResult(name, FAILED, observed, threshold, f"{name}: {message}", details or {})


def skipped(name: str, why: str) -> GateResult:
    return GateResult(name, SKIPPED, message=f"{name}: skipped, {why}")


@dataclass(frozen=True)
class Report:
    """Every gate's result for the predictions file `path`, and the file's `profile`."""

    path: Path | str
    gates: tuple[GateResult, ...]
    profile: Profile
    model: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if g.status == FAILED]

    def gate(self, name: str) -> GateResult:
        """The result of gate `name` (KeyError if there is none)."""
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(name)

    def summary(self) -> str:
        """One line: passed, or which gates failed and why."""
        if self.passed:
            return f"verification passed: {self.path} ({self.profile.row_count} rows)"
        return f"verification failed: {self.path}: " + "; ".join(g.message for g in self.failures)

    def raise_if_failed(self) -> None:
        """Raise `VerificationFailed` (holding this report) when a gate failed."""
        if not self.passed:
            raise VerificationFailed(self.summary(), self)

    def to_dict(self) -> dict[str, Any]:
        model = None
        if self.model is not None:
            model = {k: self.model.get(k) for k in ("name", "version", "format", "task", "classes")}
        return {
            "passed": self.passed,
            "predictions": str(self.path),
            "model": jsonable(model),
            "row_count": self.profile.row_count,
            "notes": list(self.notes),
            "gates": [g.to_dict() for g in self.gates],
            "profile": self.profile.to_dict(),
        }

    def render(self) -> RenderableType:
        """A rich renderable of this report (see `render_report`); `console.print(report)` works too."""
        return render_report(self)

    def __rich__(self) -> RenderableType:
        return render_report(self)


def render_report(report: Report) -> RenderableType:
    """A rich renderable of `report`: a headline, any notes, and one table row per gate."""
    title = "PASSED" if report.passed else "FAILED"
    model = ""
    if report.model:
        model = f"  model {report.model.get('name')} {report.model.get('version')}"
    head = Text.assemble((f"verification {title}", "bold green" if report.passed else "bold red"),
                         f"  {report.path}  {report.profile.row_count} rows{model}")
    table = Table(show_header=True, header_style="bold", expand=False)
    for column in ("gate", "status", "observed", "threshold", "message"):
        table.add_column(column, overflow="fold")
    for g in report.gates:
        message = g.message.removeprefix(f"{g.name}: ")
        table.add_row(Text(g.name), Text(g.status, style=_STYLE.get(g.status, "")), Text(_short(g.observed)),
                      Text(_short(g.threshold)), Text(message))
    notes = [Text(f"note: {n}", style="yellow") for n in report.notes]
    return Group(head, *notes, table)


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items())
    return str(value)


def jsonable(value: Any) -> Any:
    """`value` with tuples as lists, paths as text and non-finite floats as strings ("inf", "nan")."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
