"""Settings from the environment, checked per variable; durations with their units."""

from __future__ import annotations

import pytest

from augury.config import Settings, parse_duration
from augury.errors import ConfigError


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUGURY_STORE", "memory://x")
    monkeypatch.setenv("AUGURY_WORKERS", " 3 ")
    monkeypatch.setenv("AUGURY_CHUNK_ROWS", "1000")
    assert Settings.from_env() == Settings(store="memory://x", workers=3, chunk_rows=1000)
    for name in ("AUGURY_STORE", "AUGURY_WORKERS", "AUGURY_CHUNK_ROWS"):
        monkeypatch.delenv(name)
    assert Settings.from_env() == Settings()


@pytest.mark.parametrize(("name", "value", "words"), [
    ("AUGURY_WORKERS", "abc", "AUGURY_WORKERS must be a whole number of at least 0 (0 = every core), "
                              "not 'abc'"),
    ("AUGURY_WORKERS", "-3", "AUGURY_WORKERS must be a whole number of at least 0"),
    ("AUGURY_WORKERS", "2.5", "AUGURY_WORKERS must be a whole number"),
    ("AUGURY_CHUNK_ROWS", "0", "AUGURY_CHUNK_ROWS must be a whole number of at least 1"),
    ("AUGURY_STORE", " ", "AUGURY_STORE is empty"),
])
def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env()
    assert words in str(caught.value)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("15m", 900.0), ("12h", 43_200.0), ("7d", 604_800.0), ("1w", 604_800.0), ("250ms", 0.25),
    (" 1.5 h ", 5400.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_bare_number_needs_a_unit() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_duration("6", "--max-staleness")
    assert str(caught.value) == ("--max-staleness '6' has no unit; write e.g. 6s, 6m or 6h "
                                 "(units: ms, s, m, h, d or w)")
    with pytest.raises(ConfigError, match=r"cannot read 'soon' as --ttl; use a number and a unit"):
        parse_duration("soon", "--ttl")
