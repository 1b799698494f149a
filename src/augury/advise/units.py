"""How the advisor writes numbers: durations, counts, bytes and JSON-safe rounding."""

from __future__ import annotations

import math
from typing import Any


def duration(seconds: float | None) -> str:
    """A duration for people: '840 µs', '12.3 ms', '4.1 s', '7.5 min', '3.2 h', '2.1 days'."""
    if seconds is None:
        return "unknown"
    if not math.isfinite(seconds):
        return "unbounded"
    s = abs(seconds)
    if s < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if s < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    if s < 120:
        return f"{seconds:.3g} s"
    if s < 7200:
        return f"{seconds / 60:.3g} min"
    if s < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"


def flag(seconds: float) -> str:
    """A duration as augury's options take it (`parse_duration`): '6h', '90m', '2d', '45s'."""
    s = max(round(seconds), 1)
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % scale == 0:
            return f"{s // scale}{unit}"
    return f"{s}s"


def count(n: float | None) -> str:
    """A count for people: '950', '12,400', '3.2M', '1.1B'."""
    if n is None:
        return "unknown"
    if abs(n) >= 1e9:
        return f"{n / 1e9:.3g}B"
    if abs(n) >= 1e7:
        return f"{n / 1e6:.3g}M"
    return f"{n:,.0f}" if abs(n) >= 10 or float(n).is_integer() else f"{n:.3g}"


def size(n_bytes: float | None) -> str:
    """A size for people: '812 B', '14.2 kB', '3.1 MB', '2.4 GB' (powers of 1000)."""
    if n_bytes is None:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def share(x: float | None) -> str:
    """A share as a percentage: '87.4 %', '0.3 %', '< 0.1 %'."""
    if x is None:
        return "unknown"
    if 0 < x < 0.001:
        return "< 0.1 %"
    return f"{x * 100:.3g} %"


def rate(qps: float | None) -> str:
    """A request rate: '1,200 req/s', '0.5 req/s'."""
    if qps is None:
        return "unknown"
    if not math.isfinite(qps):
        return "unbounded"
    return f"{count(qps) if qps >= 10 else f'{qps:.2g}'} req/s"


def sig(x: float | None, digits: int = 4) -> float | None:
    """`x` rounded to `digits` significant digits; None for None and non-finite values (JSON has no inf)."""
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds, 4 significant digits (None for None or non-finite)."""
    return sig(seconds * 1e3) if seconds is not None else None


def jsonable(obj: Any) -> Any:
    """Tuples to lists, non-finite floats to None, recursively (what `json.dumps` accepts)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
