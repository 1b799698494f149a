"""The checks file: defaults, a full file, and every kind of mistake named with its key and file."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from augury.errors import ConfigError
from augury.verify import Checks, Range, load_checks

from .helpers import write_toml

DOCS = Path(__file__).resolve().parents[2] / "docs" / "verify.md"


def test_defaults_without_a_file() -> None:
    checks = load_checks(None)
    assert checks == Checks()
    assert (checks.rows.min, checks.rows.max, checks.rows.max_change) == (1, math.inf, 0.5)
    assert checks.finite.enabled and checks.probabilities.enabled
    assert checks.probabilities.sum_tolerance == 1e-6
    shares = checks.class_shares
    assert (shares.min, shares.max, shares.collapse_min_rows, shares.labels) == (0, 1, 100, {})
    assert (checks.drift.psi_max, checks.drift.epsilon) == (0.2, 1e-4)
    assert checks.golden is None and checks.ranges == {}


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    checks = load_checks(write_toml(tmp_path / "checks.toml", ""))
    assert checks == Checks(source=tmp_path / "checks.toml")


def test_a_full_file(tmp_path: Path) -> None:
    (tmp_path / "golden").mkdir()
    (tmp_path / "golden" / "set.csv").write_text("id,label\n1,yes\n")
    path = write_toml(tmp_path / "checks.toml", """
min_rows = 1000
max_rows = 2_000_000
max_row_change = 0.1

[finite]
enabled = false

[ranges.value]
min = 0
max = 1e6

[probabilities]
sum_tolerance = 1e-5

[class_shares]
min = 0.01
collapse_min_rows = 0

[class_shares.yes]
max = 0.2

[drift]
psi_max = 0.1

[golden]
path = "golden/set.csv"
min_agreement = 0.99
rtol = 1e-9
""")
    c = load_checks(path)
    assert (c.rows.min, c.rows.max, c.rows.max_change) == (1000, 2_000_000, 0.1)
    assert not c.finite.enabled
    assert c.ranges == {"value": Range(0.0, 1e6)}
    assert c.probabilities.sum_tolerance == 1e-5
    assert c.class_shares.min == 0.01 and c.class_shares.collapse_min_rows == 0
    assert c.class_shares.labels == {"yes": Range(0.0, 0.2)}
    assert c.drift.psi_max == 0.1
    assert c.golden is not None
    assert c.golden.path == tmp_path / "golden" / "set.csv"  # relative to the checks file
    assert (c.golden.min_agreement, c.golden.rtol) == (0.99, 1e-9)


def test_the_example_in_the_docs_parses(tmp_path: Path) -> None:
    example = re.search(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert example is not None
    (tmp_path / "golden.parquet").write_bytes(b"")
    checks = load_checks(write_toml(tmp_path / "checks.toml", example.group(1)))
    assert checks.golden is not None


@pytest.mark.parametrize(("text", "needle"), [
    ("min_row = 5", "unknown key 'min_row'"),
    ("[rows]\nmin = 5", "unknown key 'rows'"),
    ("[drift]\npsi = 0.3", "unknown key 'drift.psi'"),
    ("[ranges.value]\nlow = 0", "unknown key 'ranges.value.low'"),
    ("[class_shares]\nmax_share = 0.9", "unknown key 'class_shares.max_share'"),
    ("[golden]\npath = 'g.csv'\nmin_agree = 1", "unknown key 'golden.min_agree'"),
    ("[drift]\npsi_max = 'high'", "drift.psi_max must be a number"),
    ("[drift]\nenabled = 1", "drift.enabled must be true or false"),
    ("min_rows = -1", "min_rows must be a non-negative integer"),
    ("min_rows = 1.5", "min_rows must be a non-negative integer"),
    ("min_rows = 10\nmax_rows = 5", "max_rows (5) is less than min_rows (10)"),
    ("max_row_change = -0.1", "max_row_change = -0.1 is out of range [0, inf]"),
    ("[class_shares]\nmin = 1.5", "class_shares.min = 1.5 is out of range [0, 1]"),
    ("[ranges.value]\nmin = 2\nmax = 1", "ranges.value.max (1) is less than ranges.value.min (2)"),
    ("ranges = 3", "'ranges' must be a table"),
    ("[golden]\nmin_agreement = 0.5", "golden.path is required"),
    ("[golden]\npath = 'nowhere.parquet'", "golden.path: file not found"),
    ("[rows\nmin = 1", "invalid TOML"),
])
def test_mistakes_name_the_key_and_the_file(tmp_path: Path, text: str, needle: str) -> None:
    path = write_toml(tmp_path / "checks.toml", text)
    with pytest.raises(ConfigError) as err:
        load_checks(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_a_missing_checks_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="checks file not found"):
        load_checks(tmp_path / "absent.toml")


def test_inf_turns_a_limit_off(tmp_path: Path) -> None:
    checks = load_checks(write_toml(tmp_path / "c.toml", "max_row_change = inf\nmax_rows = inf"))
    assert math.isinf(checks.rows.max_change) and math.isinf(checks.rows.max)
