"""The checks file: which verification gates run, and their thresholds (docs/verify.md).

Every gate has a default, so `load_checks(None)` verifies with the defaults alone. A checks file is TOML
with the row-count limits at the top (`min_rows`, `max_rows`, `max_row_change`) and one table per other
gate (`[finite]`, `[ranges.<column>]`, `[probabilities]`, `[class_shares]`, `[drift]`, `[golden]`). An
unknown table or key, or a value of the wrong type or out of its range, is a `ConfigError` naming the
key and the file. Paths in the file are relative to the file.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augury.errors import ConfigError

INF = math.inf


@dataclass(frozen=True)
class Range:
    """Closed bounds `[min, max]` for the finite values of one column (or one class share)."""

    min: float = -INF
    max: float = INF


@dataclass(frozen=True)
class RowsCheck:
    """`min` <= rows <= `max`; with a baseline, rows within ±`max_change` (a fraction) of its row count.

    In the checks file: top-level `min_rows`, `max_rows` and `max_row_change` (`inf` turns a limit off).
    """

    min: int = 1
    max: float = INF
    max_change: float = 0.5


@dataclass(frozen=True)
class FiniteCheck:
    """No NaN or ±inf in a float output column, and no null in any output column."""

    enabled: bool = True


@dataclass(frozen=True)
class ProbabilitiesCheck:
    """Classifiers: `proba_*` values in [0, 1], and each row's probabilities sum to 1 ± `sum_tolerance`."""

    enabled: bool = True
    sum_tolerance: float = 1e-6


@dataclass(frozen=True)
class ClassSharesCheck:
    """Share of each predicted label within [`min`, `max`] (or its own bounds in `labels`).

    Also fails when every row carries one label and there are at least `collapse_min_rows` rows (0 turns
    that off), and when a label is not one of the model's declared classes.
    """

    enabled: bool = True
    min: float = 0.0
    max: float = 1.0
    collapse_min_rows: int = 100
    labels: Mapping[str, Range] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftCheck:
    """PSI of each output column against the baseline's profile must be <= `psi_max`."""

    enabled: bool = True
    psi_max: float = 0.2
    epsilon: float = 1e-4


@dataclass(frozen=True)
class GoldenCheck:
    """The share of golden rows whose predictions match (see `augury.verify.golden`) >= `min_agreement`."""

    path: Path
    min_agreement: float = 1.0
    rtol: float = 1e-6
    atol: float = 1e-12
    enabled: bool = True


@dataclass(frozen=True)
class Checks:
    """Every gate's settings. `source` is the checks file they came from (None: defaults)."""

    rows: RowsCheck = RowsCheck()
    finite: FiniteCheck = FiniteCheck()
    ranges: Mapping[str, Range] = field(default_factory=dict)
    probabilities: ProbabilitiesCheck = ProbabilitiesCheck()
    class_shares: ClassSharesCheck = ClassSharesCheck()
    drift: DriftCheck = DriftCheck()
    golden: GoldenCheck | None = None
    source: Path | None = None


def load_checks(path: str | Path | None) -> Checks:
    """The checks in TOML file `path`, or the defaults when `path` is None. Raises `ConfigError`."""
    if path is None:
        return Checks()
    path = Path(path)
    return checks_from_dict(read_toml(path, "checks file"), path)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML document in `path`; ConfigError naming `what` (e.g. "checks file") if it cannot be read."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{what} is a directory: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def checks_from_dict(data: Mapping[str, Any], path: Path | None = None) -> Checks:
    """Checks from an already-parsed mapping (the TOML document); `path` names the file in errors."""
    p = TomlReader(path)
    p.known(data, "", {"min_rows", "max_rows", "max_row_change", "finite", "ranges", "probabilities",
                       "class_shares", "drift", "golden"})
    rows_check = RowsCheck(
        min=p.count(data, "min_rows", 1),
        max=p.number(data, "max_rows", INF, low=0),
        max_change=p.number(data, "max_row_change", 0.5, low=0),
    )
    if rows_check.max < rows_check.min:
        raise p.error(f"max_rows ({rows_check.max:g}) is less than min_rows ({rows_check.min})")
    finite = p.table(data, "finite")
    p.known(finite, "finite", {"enabled"})
    ranges_table = p.table(data, "ranges")
    ranges = {col: p.range(p.table(ranges_table, col, f"ranges.{col}"), f"ranges.{col}", -INF, INF)
              for col in ranges_table}
    proba = p.table(data, "probabilities")
    p.known(proba, "probabilities", {"enabled", "sum_tolerance"})
    return Checks(
        rows=rows_check,
        finite=FiniteCheck(enabled=p.boolean(finite, "finite.enabled", True)),
        ranges=ranges,
        probabilities=ProbabilitiesCheck(
            enabled=p.boolean(proba, "probabilities.enabled", True),
            sum_tolerance=p.number(proba, "probabilities.sum_tolerance", 1e-6, low=0)),
        class_shares=_class_shares(p, p.table(data, "class_shares")),
        drift=drift_check(p, p.table(data, "drift")),
        golden=_golden(p, data.get("golden")),
        source=path,
    )


def _class_shares(p: TomlReader, t: Mapping[str, Any]) -> ClassSharesCheck:
    scalars = {"enabled", "min", "max", "collapse_min_rows"}
    labels: dict[str, Range] = {}
    for key, value in t.items():
        if isinstance(value, Mapping):
            labels[key] = p.range(value, f"class_shares.{key}", 0.0, 1.0, share=True)
        elif key not in scalars:
            raise p.error(f"unknown key 'class_shares.{key}' (expected one of {', '.join(sorted(scalars))}, "
                          f"or a table [class_shares.<label>])")
    bounds = p.range({k: v for k, v in t.items() if k in ("min", "max")}, "class_shares", 0.0, 1.0,
                     share=True)
    return ClassSharesCheck(
        enabled=p.boolean(t, "class_shares.enabled", True),
        min=bounds.min,
        max=bounds.max,
        collapse_min_rows=p.count(t, "class_shares.collapse_min_rows", 100),
        labels=labels,
    )


def drift_check(p: TomlReader, t: Mapping[str, Any]) -> DriftCheck:
    """The ``[drift]`` table (also read by the monitor's settings file: one format for both)."""
    p.known(t, "drift", {"enabled", "psi_max", "epsilon"})
    return DriftCheck(
        enabled=p.boolean(t, "drift.enabled", True),
        psi_max=p.number(t, "drift.psi_max", 0.2, low=0),
        epsilon=p.number(t, "drift.epsilon", 1e-4, low=1e-12, high=0.1),
    )


def _golden(p: TomlReader, value: Any) -> GoldenCheck | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise p.error("'golden' must be a table")
    p.known(value, "golden", {"enabled", "path", "min_agreement", "rtol", "atol"})
    raw = value.get("path")
    if not isinstance(raw, str) or not raw:
        raise p.error("golden.path is required and must be a string")
    path = Path(raw)
    if not path.is_absolute() and p.path is not None:
        path = p.path.parent / path
    enabled = p.boolean(value, "golden.enabled", True)
    if enabled and not path.is_file():
        raise p.error(f"golden.path: file not found: {path}")
    return GoldenCheck(
        path=path,
        min_agreement=p.number(value, "golden.min_agreement", 1.0, low=0, high=1),
        rtol=p.number(value, "golden.rtol", 1e-6, low=0),
        atol=p.number(value, "golden.atol", 1e-12, low=0),
        enabled=enabled,
    )


class TomlReader:
    """Typed reads from the parsed TOML, each error naming the key and the file (`what` it holds: the
    checks here, the monitor's settings in `augury.monitor.config`)."""

    def __init__(self, path: Path | None, what: str = "checks") -> None:
        self.path = path
        self.what = what

    def error(self, message: str) -> ConfigError:
        where = f" in {self.path}" if self.path is not None else ""
        return ConfigError(f"{self.what}{where}: {message}")

    def known(self, t: Mapping[str, Any], where: str, keys: set[str]) -> None:
        for key in t:
            if key not in keys:
                name = f"{where}.{key}" if where else key
                raise self.error(f"unknown key '{name}' (expected one of {', '.join(sorted(keys))})")

    def table(self, t: Mapping[str, Any], key: str, name: str | None = None) -> Mapping[str, Any]:
        value = t.get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(f"'{name or key}' must be a table")
        return value

    def boolean(self, t: Mapping[str, Any], name: str, default: bool) -> bool:
        value = t.get(name.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            raise self.error(f"{name} must be true or false, not {value!r}")
        return value

    def number(self, t: Mapping[str, Any], name: str, default: float,
               low: float = -INF, high: float = INF) -> float:
        value = t.get(name.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self.error(f"{name} must be a number, not {value!r}")
        if not low <= value <= high:
            raise self.error(f"{name} = {value!r} is out of range [{low:g}, {high:g}]")
        return float(value)

    def count(self, t: Mapping[str, Any], name: str, default: int) -> int:
        value = t.get(name.rsplit(".", 1)[-1], default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(f"{name} must be a non-negative integer, not {value!r}")
        return value

    def range(self, t: Mapping[str, Any], name: str, low: float, high: float, share: bool = False) -> Range:
        self.known(t, name, {"min", "max"})
        lo = self.number(t, f"{name}.min", low, low=low if share else -INF, high=high if share else INF)
        hi = self.number(t, f"{name}.max", high, low=low if share else -INF, high=high if share else INF)
        if hi < lo:
            raise self.error(f"{name}.max ({hi:g}) is less than {name}.min ({lo:g})")
        return Range(lo, hi)
