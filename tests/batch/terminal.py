"""What the batch tests that stop a run from outside share: a child started as from a terminal."""

from __future__ import annotations

import signal


def sigint_as_in_a_terminal() -> None:
    """A child's Ctrl-C as a terminal's: SIGINT at its default action (a `preexec_fn`). A shell that
    starts the tests in the background (`cmd &` in a script) ignores SIGINT, every child inherits that,
    and a Ctrl-C test's run went on to the end (exit 0, 2026-12-05)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
