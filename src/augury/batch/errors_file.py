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
    """The errors file (a local path or a URL), streamed beside it under a temporary name, then put in
    place whole when the block ends: a local one renamed, an object copied (an object store has no
    rename; its copy appears whole, like any object; S3's CopyObject takes up to 5 GB, some 20 million
    lines of 250 bytes: a bigger one fails the run, saying so). No line written: no file, and an
    earlier run's is removed, with a temporary one a killed run left (midway, or on an object store
    between its copy and its delete). A failure inside the
    block leaves the earlier file as it was (streaming to the target's own key would have completed that
    upload on close, replacing it); the block ends before the run's commit (`runner`), so a run failing
    at its commit has already replaced it."""

    def __init__(self, target: str) -> None:
        self.target, self.count = target, 0
        self.remote = location.is_url(target)
        if self.remote:
            base, _, name = target.rpartition("/")
            self.tmp = f"{base}/.{name}.tmp"
        else:
            self.tmp = str(Path(target).with_name(f".{Path(target).name}.tmp"))
        self.out: Any = None

    def write(self, line: bytes) -> None:
        try:
            if self.out is None:
                if self.remote:
                    fs, path = filesystem(self.tmp)
                    self.out = fs.open_output_stream(path)
                else:
                    self.out = open(self.tmp, "wb")  # noqa: SIM115  (closed by __exit__)
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
                if self.out is not None or kind is None:  # (this run's, or one a killed run left)
                    self._remove(self.tmp)
                if kind is None:
                    self._remove(self.target)  # (an earlier run's)
            elif self.remote:
                fs, path = filesystem(self.tmp)
                fs.copy_file(path, filesystem(self.target)[1])
                fs.delete_file(path)
            else:
                Path(self.tmp).replace(self.target)
        except (OSError, pa.ArrowException) as exc:
            raise BatchError(f"cannot write {self.target}: {exc}") from exc

    def _remove(self, target: str) -> None:
        if not self.remote:
            Path(target).unlink(missing_ok=True)
            return
        fs, path = filesystem(target)
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)
