"""The baseline (the active published version) and the drift gate against its profile.

Numeric columns are binned with the baseline's own edges (counted while streaming, by `BinCounter`) and
compared with the baseline's fractions; categorical columns compare value shares. A column is compared
only when both sides have it, with the same kind and some values; the others are listed in the details.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from augury.errors import InputError
from augury.store.base import VersionInfo
from augury.verify.config import DriftCheck
from augury.verify.counters import BinCounter
from augury.verify.profile import CategoricalProfile, NumericProfile, Profile
from augury.verify.psi import categorical_psi, psi
from augury.verify.report import GateResult, failed, passed, skipped
from augury.verify.source import Layout

GATE = "drift"


@dataclass(frozen=True)
class Baseline:
    """What verification compares against: the active version's row count and (if stored) its profile."""

    row_count: int
    profile: Profile | None = None
    version: str | None = None
    profile_error: str | None = None

    @classmethod
    def from_version(cls, info: VersionInfo) -> Baseline:
        """The baseline of a published store version. An empty or unreadable stored profile (say, from
        another augury release) gives no profile, and the drift gate is skipped saying why."""
        if not info.profile:
            return cls(info.row_count, None, info.version)
        try:
            return cls(info.row_count, Profile.from_dict(info.profile), info.version)
        except InputError as exc:
            return cls(info.row_count, None, info.version, f"has an unreadable stored profile ({exc})")


def drift_edges(baseline: Profile, layout: Layout) -> dict[str, tuple[float, ...]]:
    """The baseline bin edges of each numeric output column the baseline profiled."""
    edges: dict[str, tuple[float, ...]] = {}
    for o in layout.outputs:
        b = baseline.columns.get(o.name)
        if o.kind == "numeric" and isinstance(b, NumericProfile) and b.count:
            edges[o.name] = b.edges
    return edges


def drift_gate(check: DriftCheck, baseline: Baseline | None, profile: Profile, bins: BinCounter | None,
               layout: Layout) -> GateResult:
    """PSI of every comparable output column <= `check.psi_max`; skipped without a baseline profile."""
    if not check.enabled:
        return skipped(GATE, "disabled in the checks file")
    if baseline is None:
        return skipped(GATE, "no baseline (no active published version to compare with)")
    if baseline.profile is None:
        return skipped(GATE, f"the baseline version {baseline.profile_error or 'has no stored profile'}")
    if profile.row_count == 0:
        return skipped(GATE, "no rows to compare")
    values: dict[str, float] = {}
    not_compared: dict[str, str] = {}
    for o in layout.outputs:
        name = o.name
        old = baseline.profile.columns.get(name)
        new = profile.columns.get(name)
        if old is None or new is None:
            not_compared[name] = "not in the baseline profile"
        elif isinstance(old, NumericProfile) and isinstance(new, NumericProfile):
            fractions = bins.fractions(name) if bins is not None and name in bins.edges else None
            if fractions is None or not old.fractions:
                not_compared[name] = "no finite values on one side"
            else:
                values[name] = psi(old.fractions, fractions, check.epsilon)
        elif isinstance(old, CategoricalProfile) and isinstance(new, CategoricalProfile):
            if old.truncated or new.truncated:
                not_compared[name] = "too many distinct values to compare"
            elif not old.count or not new.count:
                not_compared[name] = "no values on one side"
            else:
                values[name] = categorical_psi(old.shares, new.shares, check.epsilon)
        else:
            not_compared[name] = "numeric on one side, categorical on the other"
    details: dict[str, Any] = {"psi": values, "not_compared": not_compared}
    if not values:
        return skipped(GATE, "no output column can be compared with the baseline profile")
    worst = max(values, key=lambda n: values[n])
    over = {n: v for n, v in values.items() if v > check.psi_max}
    if not over:
        return passed(GATE, f"largest PSI is {values[worst]:.3g} ({worst}) <= {check.psi_max:g}",
                      values[worst], check.psi_max, details)
    others = "".join(f", {n} {v:.2f}" for n, v in sorted(over.items(), key=lambda kv: -kv[1]) if n != worst)
    also = f" (also over: {others[2:]})" if others else ""
    return failed(GATE, f"PSI of {worst} is {values[worst]:.2f} > {check.psi_max:g}{also}",
                  values[worst], check.psi_max, details)
