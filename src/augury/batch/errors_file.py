"""The errors file of a batch run: one JSON line per input row that could not be scored.

Both outputs write it through this one class (`local_output.LocalOutput.collect_errors`,
`object_output.ObjectOutput.collect_errors`), to a local path or a URL, whichever output the run has.
It is streamed, appears whole or not at all, and only when a row failed: a run without a bad row
leaves none, and removes an earlier run's file of that name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from augury.errors import BatchError

from . import location
from .location import filesystem


class ErrorsFile:
    """The errors file (a local path or a URL), streamed: it appears whole when the block ends (a local
    one by rename, an object when its upload completes), or is removed when no line was written; a
    failure midway leaves none."""

    def __init__(self, target: str) -> None:
        self.target, self.count = target, 0
        self.remote = location.is_url(target)
        self.tmp = Path(target).with_name(f".{Path(target).name}.tmp") if not self.remote else None
        self.out: Any = None

    def write(self, line: bytes) -> None:
        try:
            if self.out is None:
                if self.tmp is not None:
                    self.out = open(self.tmp, "wb")  # noqa: SIM115  (closed by __exit__)
                else:
                    fs, path = filesystem(self.target)
                    self.out = fs.open_output_stream(path)
            self.out.write(line)
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"cannot write the errors file {self.target}: {exc}") from exc
        self.count += 1

    def __enter__(self) -> ErrorsFile:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        try:
            if self.out is not None:
                self.out.close()
            if kind is not None or self.count == 0:
                self._remove(self.target if kind is None else None)
            elif self.tmp is not None:
                self.tmp.replace(self.target)
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"cannot write {self.target}: {exc}") from exc

    def _remove(self, target: str | None) -> None:
        """Remove what was written (and, with `target`, the errors file of an earlier run)."""
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            if target is not None:
                Path(target).unlink(missing_ok=True)
            return
        fs, path = filesystem(self.target)
        if (self.out is not None or target is not None) and fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)
