"""The quick start's demo runs end to end (a smaller catalogue, the same steps)."""

from __future__ import annotations

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
