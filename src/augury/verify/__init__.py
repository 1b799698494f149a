"""Post-verification: gates a predictions file must pass before it is published (docs/verify.md).

    checks = load_checks("checks.toml")            # or load_checks(None) for the defaults
    report = verify("predictions.parquet", checks, baseline=store.active())
    console.print(report)                          # a rich table of gates
    report.raise_if_failed()                       # VerificationFailed when a gate failed
    store.publish(..., profile=report.profile.to_dict())

`profile_predictions` summarises a predictions file on its own; `Baseline` wraps the active version's row
count and stored profile, against which the row-change and drift gates compare.
"""

from augury.verify.config import (
    Checks,
    ClassSharesCheck,
    DriftCheck,
    FiniteCheck,
    GoldenCheck,
    ProbabilitiesCheck,
    Range,
    RowsCheck,
    checks_from_dict,
    load_checks,
)
from augury.verify.drift import Baseline
from augury.verify.profile import CategoricalProfile, NumericProfile, Profile, profile_predictions
from augury.verify.psi import categorical_psi, psi
from augury.verify.report import GateResult, Report, render_report
from augury.verify.runner import verify

__all__ = [
    "Baseline",
    "CategoricalProfile",
    "Checks",
    "ClassSharesCheck",
    "DriftCheck",
    "FiniteCheck",
    "GateResult",
    "GoldenCheck",
    "NumericProfile",
    "ProbabilitiesCheck",
    "Profile",
    "Range",
    "Report",
    "RowsCheck",
    "categorical_psi",
    "checks_from_dict",
    "load_checks",
    "profile_predictions",
    "psi",
    "render_report",
    "verify",
]
