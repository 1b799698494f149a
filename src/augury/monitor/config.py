"""The monitor's settings file (``augury serve --monitor-config monitor.toml``): windows and alert limits.

The format is the checks file's where it fits (docs/verify.md): ``[drift]`` takes the same keys with the
same defaults (`verify.config.drift_check`), read by the same typed reader, so one PSI limit means the
same at publish time and while serving. Every key is optional::

    [window]
    requests = 1000     # a window closes after this many requests...
    seconds = 60        # ...or this many seconds, whichever comes first
    min_rows = 200      # a window of fewer rows (of one source) is not compared: its PSI is noise

    [drift]             # as in the checks file
    psi_max = 0.2
    epsilon = 1e-4

    [drift.columns.tenure_months]
    psi_max = 0.3       # a column's own limit

    [alerts]
    windows = 1         # consecutive windows past a limit before a drift alert fires

    [shadow]            # hybrid servers: static answers scored again by the live model
    share = 0.05        # share of static answers (with features) checked; 0 turns it off
    max_disagreement = 0.05
    min_rows = 200      # answers checked per window (or `seconds`, with at least 10)
    seconds = 60
    rtol = 1e-6         # models without labels: a value off by more than this (relative) differs

An unknown key, or a value of the wrong type or out of range, is a `ConfigError` naming the key and the
file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from augury.monitor.shadow import ShadowSettings
from augury.verify.config import DriftCheck, TomlReader, drift_check, read_toml


@dataclass(frozen=True)
class Window:
    """When a window of served requests closes, and how many rows it needs to be compared."""

    requests: int = 1000
    seconds: float = 60.0
    min_rows: int = 200


@dataclass(frozen=True)
class MonitorConfig:
    """Everything the settings file sets (defaults: `MonitorConfig()`)."""

    window: Window = Window()
    drift: DriftCheck = field(default_factory=DriftCheck)
    #: each column's own PSI limit (else `drift.psi_max`)
    psi_max: Mapping[str, float] = field(default_factory=dict)
    #: consecutive windows past a limit before a drift alert fires
    alert_windows: int = 1
    shadow: ShadowSettings = field(default_factory=ShadowSettings)
    source: Path | None = None

    def psi_limit(self, column: str) -> float:
        return self.psi_max.get(column, self.drift.psi_max)


def load_monitor_config(path: str | Path | None) -> MonitorConfig:
    """The settings in TOML file `path`, or the defaults when `path` is None. Raises `ConfigError`."""
    if path is None:
        return MonitorConfig()
    path = Path(path)
    return monitor_config_from_dict(read_toml(path, "monitor settings file"), path)


def monitor_config_from_dict(data: Mapping[str, Any], path: Path | None = None) -> MonitorConfig:
    """Settings from an already-parsed mapping; `path` names the file in errors."""
    r = TomlReader(path, "monitor settings")
    r.known(data, "", {"window", "drift", "alerts", "shadow"})
    w = r.table(data, "window")
    r.known(w, "window", {"requests", "seconds", "min_rows"})
    window = Window(requests=_at_least_one(r, w, "window.requests", 1000),
                    seconds=r.number(w, "window.seconds", 60.0, low=0.01),
                    min_rows=_at_least_one(r, w, "window.min_rows", 200))
    d = r.table(data, "drift")
    columns = r.table(d, "columns", "drift.columns")
    limits: dict[str, float] = {}
    for name in columns:
        t = r.table(columns, name, f"drift.columns.{name}")
        r.known(t, f"drift.columns.{name}", {"psi_max"})
        limits[name] = r.number(t, f"drift.columns.{name}.psi_max", 0.2, low=0)
    a = r.table(data, "alerts")
    r.known(a, "alerts", {"windows"})
    sh = r.table(data, "shadow")
    r.known(sh, "shadow", {"share", "max_disagreement", "min_rows", "seconds", "rtol"})
    shadow = ShadowSettings(share=r.number(sh, "shadow.share", 0.05, low=0, high=1),
                            max_disagreement=r.number(sh, "shadow.max_disagreement", 0.05, low=0, high=1),
                            min_rows=_at_least_one(r, sh, "shadow.min_rows", 200),
                            seconds=r.number(sh, "shadow.seconds", 60.0, low=0.01),
                            rtol=r.number(sh, "shadow.rtol", 1e-6, low=0))
    return MonitorConfig(window=window, drift=drift_check(r, {k: v for k, v in d.items() if k != "columns"}),
                         psi_max=limits, alert_windows=_at_least_one(r, a, "alerts.windows", 1),
                         shadow=shadow, source=path)


def _at_least_one(r: TomlReader, t: Mapping[str, Any], name: str, default: int) -> int:
    value = r.count(t, name, default)
    if value < 1:
        raise r.error(f"{name} must be at least 1, not {value}")
    return value
