"""Typed settings shared by the CLI and the server, and the small parsers they use.

Every setting can also come from the environment with the prefix `AUGURY_` (e.g. `AUGURY_STORE`). The
environment is read when a command needs a setting, never at import: a bad value (``AUGURY_WORKERS=abc``)
is then one error naming the variable, and ``augury --help`` still works.

A duration is a number and a unit (``90s``, ``15m``, ``12h``): a bare number is refused rather than read as
seconds, since ``--max-staleness 6`` meant as six hours would otherwise be six seconds without a word.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from augury.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_UNITS = "ms, s, m, h, d or w"


def parse_duration(text: str, what: str = "a duration") -> float:
    """Seconds in a duration such as '90s', '15m', '12h', '7d', '1w' (a unit is required). `what` names
    the value in the error (e.g. '--ttl')."""
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"cannot read {text!r} as {what}; use a number and a unit ({_UNITS}), e.g. 90s, "
                          f"15m, 12h, 7d")
    number, unit = m.groups()
    if unit is None:
        raise ConfigError(f"{what} {text.strip()!r} has no unit; write e.g. {number}s, {number}m or "
                          f"{number}h (units: {_UNITS})")
    return float(number) * _UNIT_S[unit]


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
        """The settings, each from its environment variable when that is set; ConfigError naming the
        variable whose value is not valid."""
        env = os.environ
        store = env.get("AUGURY_STORE", cls.store)
        if not store.strip():
            raise ConfigError("AUGURY_STORE is empty; give a store URL (sqlite:///augury.db...) or unset it")
        return cls(
            store=store,
            workers=_whole(env, "AUGURY_WORKERS", cls.workers, 0, "0 = every core"),
            chunk_rows=_whole(env, "AUGURY_CHUNK_ROWS", cls.chunk_rows, 1, "rows per chunk"),
        )


def _whole(env: Mapping[str, str], name: str, default: int, minimum: int, meaning: str) -> int:
    """The whole number in environment variable `name` (`default` if unset); ConfigError naming it if
    its value is not a whole number of at least `minimum`."""
    text = env.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum} ({meaning}), not {text!r}")
    return value
