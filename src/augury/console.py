"""How the command line shows things: progress, tables, JSON. No work happens here.

Rich reads square brackets in printed text as markup: ``[[inputs]]`` in a message came out as ``[]``. So
text that is not ours (messages, names, versions, paths, table cells) is printed with ``markup=False`` or
passed through `plain`, and only the styling written here and in the commands is markup.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from augury.batch import Progress as BatchProgress

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(doc: Any) -> None:
    sys.stdout.write(
        orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode() + "\n"
    )
    sys.stdout.flush()


def plain(value: Any) -> str:
    """`value` as text that rich prints as it is (square brackets escaped), for use inside markup."""
    return escape(str(value))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """A table of `rows`, every cell (and the title) printed as it is, never read as markup."""
    t = Table(title=None if title is None else plain(title), title_justify="left")
    for c in columns:
        t.add_column(plain(c))
    for r in rows:
        t.add_row(*("" if v is None else plain(v) for v in r))
    return t


class ProgressReporter:
    """A progress bar on a terminal; elsewhere one parseable line every few seconds on stderr:
    `progress rows=N total=N failed=N rows_per_s=X eta_s=Y`."""

    def __init__(self, label: str, interval_s: float = 2.0) -> None:
        self.label = label
        self.interval_s = interval_s
        self.tty = err.is_terminal
        self._bar: Progress | None = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> ProgressReporter:
        if self.tty:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeRemainingColumn(),
                console=err,
                auto_refresh=False,  # no refresh thread: batch workers can then be forked safely
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None, rate="-")
        return self

    def __call__(self, p: BatchProgress) -> None:
        rate = p.rows_done / p.elapsed_s if p.elapsed_s > 0 else 0.0
        if self._bar is not None:
            self._bar.update(self._task, completed=p.rows_done, total=p.rows_total, rate=f"{rate:,.0f}")
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last < self.interval_s and p.rows_done != p.rows_total:
            return
        self._last = now
        eta = (p.rows_total - p.rows_done) / rate if p.rows_total and rate > 0 else None
        err.print(
            f"progress rows={p.rows_done} total={p.rows_total if p.rows_total is not None else '?'} "
            f"failed={p.rows_failed} rows_per_s={rate:.0f} eta_s={'?' if eta is None else f'{eta:.0f}'}",
            soft_wrap=True,
        )

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(t, e, tb)
