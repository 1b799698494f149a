"""`iso` (every timestamp augury writes) equals datetime's own formatting, rounding included."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from augury.store.base import iso


def _reference(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat().replace("+00:00", "Z")


@given(st.floats(min_value=-1e9, max_value=2.5e11, allow_nan=False))
def test_iso_is_datetimes_isoformat(ts: float) -> None:
    assert iso(ts) == _reference(ts)


def test_iso_rounds_half_to_even_and_drops_zero_microseconds() -> None:
    now = time.time()
    for ts in (0.0, -0.5, 1e9 + 0.9999995, 1e9 + 0.0000005, 1e9 + 0.0000015, 1764000000.0, now,
               *(now + i * 1e-7 for i in range(2000))):
        assert iso(ts) == _reference(ts)
    assert iso(1764000000.0) == "2025-11-24T16:00:00Z"
    assert iso(None) is None
