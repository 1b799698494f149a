"""`augury serve`'s option defaults are the server's own (`ServeSettings`): the CLI repeats them so that
`augury --help` does not import the web stack, and this test keeps the two from drifting apart."""

from __future__ import annotations

from dataclasses import fields

from augury.cli.serve import serve
from augury.serve.settings import ServeSettings


def test_cli_defaults_match_serve_settings() -> None:
    options = {p.name: p.default for p in serve.params}
    defaults = ServeSettings()
    checked = 0
    for f in fields(ServeSettings):
        if f.name in options and f.name not in ("name",):
            assert options[f.name] == getattr(defaults, f.name), f.name
            checked += 1
    assert checked >= 7
