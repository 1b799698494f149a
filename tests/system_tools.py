"""The system programs some tests run (redis-server, chromium, promtool): found on PATH, or the test fails
saying how to install it (``bash scripts/test`` installs them all), so a machine without one never passes
by not testing. An ``AUGURY_SKIP_...`` variable, where a tool has one, skips those tests on purpose,
visibly."""

from __future__ import annotations

import os
import shutil

import pytest


def system_tool(*names: str, needed_by: str, package: str, skip_env: str | None = None) -> str:
    """The first of `names` on PATH; else fail the test (skip it when `skip_env` is set to 1), naming the
    Debian `package` that installs it and what `needed_by` it."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = (f"{names[0]} is not on PATH: {needed_by} need it (bash scripts/test installs it; or apt-get "
               f"install {package})")
    if skip_env is not None:
        message += f"; {skip_env}=1 skips these tests"
        if os.environ.get(skip_env) == "1":
            pytest.skip(message)
    pytest.fail(message, pytrace=False)
