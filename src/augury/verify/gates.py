"""The gates that judge a predictions file from its layout, profile and streaming counters.

Each function returns one `GateResult`: passed, failed (the message names the gate, the observed value
and the threshold) or skipped (the message says why). They are pure: all reading happened before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from augury.verify.config import Checks, ClassSharesCheck, Range, RowsCheck
from augury.verify.counters import ProbaSumCounter, ProvenanceCounter, RangeCount
from augury.verify.drift import Baseline
from augury.verify.profile import CategoricalProfile, NumericProfile, Profile
from augury.verify.report import GateResult, failed, passed, skipped
from augury.verify.source import Layout
from augury.verify.unique import KeyCount

PROBA_RANGE = Range(0.0, 1.0)


def columns_gate(layout: Layout) -> GateResult:
    """Every column the metadata declares is present, and there is at least one output column."""
    if layout.missing:
        return failed("columns", f"missing column(s) {', '.join(layout.missing)}",
                      list(layout.missing), [])
    if not layout.outputs:
        return failed("columns", "no output columns to verify", 0, ">= 1")
    return passed("columns", f"{len(layout.outputs)} output column(s) present",
                  [o.name for o in layout.outputs])


def provenance_gate(layout: Layout, counter: ProvenanceCounter, present: list[str]) -> GateResult:
    """Every row has a `computed_at` and one `model_version`: the metadata's, when there is metadata."""
    name = "provenance"
    if not present:
        return skipped(name, "no model_version or computed_at column")
    expected = str(layout.model["version"]) if layout.model and layout.model.get("version") else None
    nulls = counter.null_versions + counter.null_times
    if nulls:
        return failed(name, f"{counter.null_versions} row(s) without model_version and {counter.null_times} "
                      "without computed_at", nulls, 0)
    seen = sorted(counter.versions)
    if len(seen) > 1 or (expected is not None and seen and seen != [expected]):
        want = f"only {expected!r}" if expected is not None else "one version"
        return failed(name, f"model_version values {seen} (expected {want})", seen, expected)
    return passed(name, f"model_version {seen[0] if seen else '-'} on every row", seen, expected)


def keys_gate(layout: Layout, count: KeyCount | None) -> GateResult:
    """Every row has a key, and no key is on two rows (a store version holds one prediction per key)."""
    name = "keys"
    if count is None:
        missing = [c for c in layout.key_columns if c in layout.missing]
        return skipped(name, f"key column(s) {', '.join(missing)} missing" if missing else "no key columns")
    details = {"rows": count.rows + count.null_rows, "rows_without_key": count.null_rows,
               "repeated_keys": count.repeated_keys, "repeated_rows": count.repeated_rows,
               "first_repeated": [{"key": d.key, "count": d.count, "rows": list(d.rows)}
                                  for d in count.examples]}
    problems: list[str] = []
    if count.null_rows:
        problems.append(f"{count.null_rows} row(s) without a key (a null in {', '.join(layout.key_columns)})")
    if count.repeated_keys:
        shown = ", ".join(f"{d.key!r} {d.count} times (rows {', '.join(map(str, d.rows))}"
                          f"{', ...' if d.count > len(d.rows) else ''})" for d in count.examples)
        more = ", ..." if count.repeated_keys > len(count.examples) else ""
        problems.append(f"{count.repeated_keys} key(s) on more than one row ({count.repeated_rows} row(s) "
                        f"too many): {shown}{more}")
    if problems:
        return failed(name, "; ".join(problems), count.repeated_rows + count.null_rows, 0, details)
    return passed(name, f"{count.rows} distinct key(s), one row each", 0, 0, details)


def rows_gate(check: RowsCheck, rows: int) -> GateResult:
    """`check.min` <= rows <= `check.max`."""
    name = "rows"
    threshold = [check.min, check.max]
    if rows < check.min:
        return failed(name, f"{rows} rows < min {check.min}", rows, threshold)
    if rows > check.max:
        return failed(name, f"{rows} rows > max {check.max:g}", rows, threshold)
    return passed(name, f"{rows} rows within [{check.min}, {check.max:g}]", rows, threshold)


def row_change_gate(check: RowsCheck, rows: int, baseline: Baseline | None) -> GateResult:
    """Rows within ±`check.max_change` (a fraction) of the baseline's row count."""
    name = "row_change"
    if math.isinf(check.max_change):
        return skipped(name, "max_row_change is inf")
    if baseline is None:
        return skipped(name, "no baseline (no active published version to compare with)")
    if baseline.row_count <= 0:
        return skipped(name, "the baseline version has no rows")
    change = (rows - baseline.row_count) / baseline.row_count
    details = {"rows": rows, "baseline_rows": baseline.row_count}
    text = f"{rows} rows is {change:+.1%} vs the baseline's {baseline.row_count}"
    if abs(change) > check.max_change:
        return failed(name, f"{text} (limit ±{check.max_change:.1%})", change, check.max_change, details)
    return passed(name, f"{text} (limit ±{check.max_change:.1%})", change, check.max_change, details)


def finite_gate(enabled: bool, layout: Layout, profile: Profile) -> GateResult:
    """No NaN or ±inf in a float output column, and no null in any output column."""
    name = "finite"
    if not enabled:
        return skipped(name, "disabled in the checks file")
    bad: dict[str, dict[str, int]] = {}
    for o in layout.outputs:
        col = profile.columns.get(o.name)
        if isinstance(col, NumericProfile):
            counts = {"NaN": col.nan, "+inf": col.posinf, "-inf": col.neginf, "null": col.null}
        elif isinstance(col, CategoricalProfile):
            counts = {"null": col.null}
        else:
            continue
        counts = {k: v for k, v in counts.items() if v}
        if counts:
            bad[o.name] = counts
    total = sum(sum(c.values()) for c in bad.values())
    if not bad:
        return passed(name, "no NaN, inf or null in any output column", 0, 0)
    text = "; ".join(f"{col} has " + ", ".join(f"{v} {k}" for k, v in c.items()) for col, c in bad.items())
    return failed(name, f"{text} (allowed: 0)", total, 0, bad)


def effective_ranges(checks: Checks, layout: Layout) -> dict[str, Range]:
    """The configured ranges, plus [0, 1] for each classifier probability column not configured."""
    ranges: dict[str, Range] = {}
    if checks.probabilities.enabled and layout.task == "classification":
        ranges.update({o.name: PROBA_RANGE for o in layout.proba})
    ranges.update(checks.ranges)
    return ranges


def ranges_gate(counts: Mapping[str, RangeCount], layout: Layout, profile: Profile) -> GateResult:
    """Every finite value of each ranged column lies within its range."""
    name = "ranges"
    if not counts:
        return skipped(name, "no ranges configured and no probability columns")
    numeric = {o.name for o in layout.outputs if o.kind == "numeric"}
    problems: list[str] = []
    details: dict[str, Any] = {}
    for col, c in counts.items():
        r = c.range
        if col not in numeric:
            problems.append(f"{col} is not a numeric output column")
            details[col] = {"range": [r.min, r.max], "error": "not a numeric output column"}
            continue
        p = profile.columns.get(col)
        if not isinstance(p, NumericProfile):
            continue
        details[col] = {"range": [r.min, r.max], "min": p.min, "max": p.max,
                        "below": c.below, "above": c.above}
        if c.below or c.above:
            problems.append(f"{col} has {c.below + c.above} value(s) outside [{r.min:g}, {r.max:g}] "
                            f"(min {p.min:.6g}, max {p.max:.6g})")
    outside = sum(c.below + c.above for c in counts.values())
    if problems:
        return failed(name, "; ".join(problems), outside, 0, details)
    return passed(name, f"{len(counts)} column(s) within range", 0, 0, details)


def probabilities_gate(enabled: bool, counter: ProbaSumCounter | None) -> GateResult:
    """Each row's probabilities sum to 1 within the tolerance."""
    name = "probabilities"
    if not enabled:
        return skipped(name, "disabled in the checks file")
    if counter is None or not counter.columns:
        return skipped(name, "not a classifier with probability columns")
    tol = counter.tolerance
    if counter.off:
        return failed(name, f"{counter.off} row(s) whose probabilities do not sum to 1 ± {tol:g} "
                      f"(worst sum {counter.worst_sum!r}, off by {counter.worst:.3g} > {tol:g})",
                      counter.worst, tol, {"rows_off": counter.off, "rows_checked": counter.rows})
    return passed(name, f"{counter.rows} row(s) sum to 1 ± {tol:g} (worst off by {counter.worst:.3g})",
                  counter.worst, tol, {"rows_checked": counter.rows})


def class_shares_gate(check: ClassSharesCheck, layout: Layout, profile: Profile) -> GateResult:
    """Known labels only, each label's share within its bounds, and no collapse to a single label."""
    name = "class_shares"
    if not check.enabled:
        return skipped(name, "disabled in the checks file")
    label = layout.label
    col = profile.columns.get(label.name) if label is not None else None
    if not isinstance(col, CategoricalProfile):
        return skipped(name, "no label column (not a classifier)")
    if col.truncated:
        return failed(name, "label has too many distinct values to count", "truncated", None)
    if not col.count:
        return skipped(name, "no labels to count")
    shares = dict(col.shares)
    classes = list(layout.classes)
    problems: list[str] = []
    if classes:
        unknown = [c for c in shares if c not in classes]
        if unknown:
            problems.append(f"label(s) {', '.join(map(repr, unknown))} are not classes of the model "
                            f"{classes}")
        typos = [c for c in check.labels if c not in classes]
        if typos:
            problems.append(f"[class_shares.{typos[0]}] names no class of the model {classes}")
    everything = list(dict.fromkeys([*classes, *shares, *check.labels]))
    for c in everything:
        bounds = check.labels.get(c, Range(check.min, check.max))
        share = shares.get(c, 0.0)
        if share < bounds.min:
            problems.append(f"share of class {c!r} is {share:.4g} < min {bounds.min:g}")
        elif share > bounds.max:
            problems.append(f"share of class {c!r} is {share:.4g} > max {bounds.max:g}")
    many_classes = len(classes) >= 2 or not classes
    if check.collapse_min_rows and col.count >= check.collapse_min_rows and len(shares) == 1 and many_classes:
        only = next(iter(shares))
        problems.append(f"all {col.count} rows are labelled {only!r} (collapse: a single class over "
                        f">= {check.collapse_min_rows} rows)")
    threshold = {"min": check.min, "max": check.max, **{k: [r.min, r.max] for k, r in check.labels.items()}}
    if problems:
        return failed(name, "; ".join(problems), shares, threshold)
    return passed(name, f"{len(shares)} class(es) within bounds", shares, threshold)
