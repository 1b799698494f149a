"""The quick start's demo runs end to end (a smaller catalogue, the same steps)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "augury.cli", "demo", "--dir", str(tmp_path / "demo"), "--rows", "2000"],
        capture_output=True, text=True, timeout=300, env={"COLUMNS": "160", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for step in ("verification PASSED", "published store version 1", "(miss: never precomputed)",
                 "published store version 2", "static", "dynamic"):
        assert step in out
    assert "Traceback" not in proc.stderr
    # it says what it is doing while it trains, and how long that took
    assert "training wine-1.joblib" in out and "trained in " in out
    # the bad retrain is refused by the gates that see its shift; nothing of it is published
    assert "verification FAILED" in out and "refusing to publish" in out and "drift: PSI of proba_" in out
    assert "store version 1 stays active, and model 2 never reaches a reader" in out
    # the good retrain really differs from model 1, and still passes
    changed = re.search(r"model 3 against model 1: ([\d,]+) of 2,000 labels differ.*probabilities by up to "
                        r"([\d.]+)", out)
    assert changed is not None and float(changed.group(2)) > 0, out
    assert "published store version 2 (model 3)" in out
    # the rollback is announced, and the advisor's report is written where the demo says
    assert "rolled back: store version 2 -> 1 (model 1)" in out
    report = tmp_path / "demo" / "advice" / "advice.html"
    assert f"the advisor's report, with its plots: {report}" in out and report.stat().st_size > 0
    # no lock file is left beside the batch outputs
    assert sorted(p.name for p in (tmp_path / "demo").iterdir() if p.name.startswith(".")) == []
