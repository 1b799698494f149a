"""`augury serve`'s option defaults are the server's own (`ServeSettings`): the CLI repeats them so that
`augury --help` does not import the web stack, and this test keeps the two from drifting apart.

Each option's default is read as click resolves it when the option is not given (`Parameter.get_default`),
not from the `default` attribute: since click 8.3 a flag declared without a default holds the `UNSET`
sentinel there (``--ignore-unknown-fields`` read ``Sentinel.UNSET``, not False), and click turns it into
False only when it resolves the value."""

from __future__ import annotations

from dataclasses import fields

import click

from augury.cli.serve import serve
from augury.serve.settings import ServeSettings


def test_cli_defaults_match_serve_settings() -> None:
    ctx = click.Context(serve)
    options = {p.name: p.get_default(ctx) for p in serve.params}
    defaults = ServeSettings()
    checked = 0
    for f in fields(ServeSettings):
        if f.name in options and f.name not in ("name",):
            assert options[f.name] == getattr(defaults, f.name), f.name
            checked += 1
    assert checked >= 7


def test_cli_time_limits_match_serve_settings() -> None:
    """The connection time limits are given as durations on the command line, seconds in the settings."""
    from augury.config import parse_duration

    ctx = click.Context(serve)
    options = {p.name: p.get_default(ctx) for p in serve.params}
    defaults = ServeSettings()
    assert parse_duration(options["keep_alive_timeout"]) == defaults.keep_alive_s
    assert parse_duration(options["header_timeout"]) == defaults.header_timeout_s
    assert parse_duration(options["body_timeout"]) == defaults.body_timeout_s
