"""Request times in a traffic log, however they were written."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

from augury.advise.timestamps import seconds_of
from augury.errors import InputError

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("column", [
    pa.array([T, T + 1.5]),
    pa.array([int(T * 1e3), int((T + 1.5) * 1e3)]),  # milliseconds
    pa.array([int(T * 1e6), int((T + 1.5) * 1e6)]),  # microseconds
    pa.array([str(T), str(T + 1.5)]),  # numbers as text (CSV)
    pa.array(["2026-03-01T12:00:00Z", "2026-03-01T13:00:01.5+01:00"]),
    pa.array(["2026-03-01 12:00:00", "2026-03-01T12:00:01.500"]),  # no zone: UTC
    pa.array([int(T * 1e6), int((T + 1.5) * 1e6)], pa.timestamp("us", tz="UTC")),
    pa.array([int(T), int(T + 1.5)], pa.timestamp("s")).cast(pa.timestamp("ms")),
])
def test_times_are_unix_seconds(column: pa.Array) -> None:
    got = seconds_of(column, "ts")
    expected = [T, T + (1.0 if column.type == pa.timestamp("ms") else 1.5)]
    assert np.allclose(got, expected, atol=1e-3)


def test_bad_times_are_named() -> None:
    with pytest.raises(InputError, match=r"log: column 'ts'.*1 empty value"):
        seconds_of(pa.array([T, None]), "log: column 'ts'")
    with pytest.raises(InputError, match="cannot read 'yesterday' as a time"):
        seconds_of(pa.array(["yesterday"]), "ts")
    with pytest.raises(InputError, match="holds bool values"):
        seconds_of(pa.array([True]), "ts")
