"""What every command shares: options, exit codes, and the translation of errors to one message."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from augury import console
from augury.config import Settings
from augury.errors import AuguryError, TooManyBadRows, VerificationFailed
from augury.models import evaluator

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


def store_option(required: bool = False) -> Callable[[F], F]:
    """``--store``; None when not given, and a command that needs a store then takes AUGURY_STORE, else the
    default (`resolve_store`). The environment is read when the command runs, not when this module is
    imported, so a bad AUGURY_* value is one error (see `reporting`) and never breaks ``--help``."""
    return click.option(
        "--store",
        "store_url",
        default=None,
        show_default=Settings.store if required else False,
        metavar="URL",
        help="Prediction store URL: sqlite:///path.db or memory://  (env AUGURY_STORE).",
    )


def resolve_store(given: str | None) -> str:
    """The store URL a command uses: `given` (``--store``), else AUGURY_STORE, else the default."""
    return given or Settings.from_env().store


#: ``--evaluator``, spelled the same on every command that loads a model, with the one shared default.
evaluator_option = click.option(
    "--evaluator",
    type=click.Choice(list(evaluator.CHOICES)),
    default=evaluator.DEFAULT,
    show_default=True,
    help="Which code scores the model: auto (the compiled evaluator for scikit-learn HistGradientBoosting "
    "models where numba is installed, else the library's), compiled (the same; no numba is an error), or "
    "library. The choice is recorded with every prediction.",
)


def reporting(fn: F) -> F:
    """Turn augury's errors into one readable message and an exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        as_json = bool(kwargs.get("as_json"))
        try:
            return int(fn(*args, **kwargs) or 0)
        except VerificationFailed as exc:
            _show_failure(str(exc), as_json, exc.report)
            return EXIT_CHECK_FAILED
        except TooManyBadRows as exc:
            _show_failure(str(exc), as_json)
            return EXIT_CHECK_FAILED
        except AuguryError as exc:
            _show_failure(str(exc), as_json)
            return EXIT_ERROR

    return wrapper  # type: ignore[return-value]


def _show_failure(message: str, as_json: bool, report: Any = None) -> None:
    if as_json:
        doc: dict[str, Any] = {"error": message}
        if report is not None:
            doc["report"] = report.to_dict()
        console.print_json(doc)
    elif report is not None:
        console.out.print(report.render())
    console.err.print(f"augury: {message}", soft_wrap=True, markup=False)  # ("[[inputs]]" stays)
