"""The `augury` command line. It wires the core together and translates; it does no work of its own.

Exit codes: 0 success; 1 a check failed (a verification gate, a refused publish, too many bad rows);
2 an error (bad input, missing file, bad option); 130 interrupted. With `--json`, a command prints one
JSON document on stdout, an error included (`{"error": "..."}`); messages go to stderr.
"""

from __future__ import annotations

import sys

import click

from augury import console
from augury.errors import AuguryError

from . import serve, static, store, tools
from ._common import EXIT_ERROR, EXIT_INTERRUPTED


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="augury")
def cli() -> None:
    """augury: static, dynamic and hybrid inference for trained models."""


COMMANDS = (
    static.info,
    static.batch,
    static.verify,
    static.publish,
    store.store,
    serve.serve,
    tools.advise,
    tools.demo,
)
for command in COMMANDS:
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """The console script: run a command, map interrupts and usage errors to exit codes."""
    try:
        rv = cli.main(args=argv, prog_name="augury", standalone_mode=False)
    except click.exceptions.Abort:
        console.err.print(_interrupted(argv))
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_ERROR
    except AuguryError as exc:  # raised outside a command's `reporting` (while parsing): one line too
        console.err.print(f"augury: {exc}", soft_wrap=True, markup=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.err.print(_interrupted(argv))
        return EXIT_INTERRUPTED
    return rv if isinstance(rv, int) else 0


def _interrupted(argv: list[str] | None) -> str:
    """The line for Ctrl-C: a batch run can be resumed; an interrupted publish published nothing."""
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), "")
    if command == "batch":
        return "augury: interrupted (rerun `augury batch` with --resume to continue this run)"
    if command == "publish":
        return ("augury: interrupted (a publish that had not finished published nothing: the active "
                "version is unchanged)")
    return "augury: interrupted"
