"""Typed settings shared by the CLI and the server, and the small parsers they use.

Every setting can also come from the environment with the prefix `AUGURY_` (e.g. `AUGURY_STORE`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from augury.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as '90s', '15m', '12h', '7d', '1w' or a bare number of seconds."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"cannot read {text!r} as a duration; use e.g. 90s, 15m, 12h, 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2) or "s"]


@dataclass(frozen=True)
class Settings:
    """Defaults for the command line; each is overridden by its `AUGURY_<NAME>` environment variable."""

    #: the prediction store URL used when a command is not given `--store`.
    store: str = "sqlite:///augury.db"
    #: batch worker processes (0 = every core).
    workers: int = 0
    #: rows per chunk in batch runs.
    chunk_rows: int = 32_768

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        try:
            return cls(
                store=env.get("AUGURY_STORE", cls.store),
                workers=int(env.get("AUGURY_WORKERS", cls.workers)),
                chunk_rows=int(env.get("AUGURY_CHUNK_ROWS", cls.chunk_rows)),
            )
        except ValueError as exc:
            raise ConfigError(f"bad AUGURY_* environment setting: {exc}") from exc
