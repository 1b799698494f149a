"""Where a batch run reads and writes: a local path or a URL, resolved once at the run's boundary.

Inputs and outputs are addressed as URLs so that a distributed engine's workers can open them
themselves: every task and the staging folder are handed to the workers as absolute locations, never as
file handles or data. Today a location is a local path (also on a file system every worker shares) or a
``file://`` URL; an object-store URL (``s3://``, ``gs://``, ...) is refused in one line that says so,
rather than half-supported: the output is committed by renames (a part by its task's name, the dataset
or file in one rename at the end), which object stores do not offer atomically.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from augury.errors import InputError


def local_path(location: str | os.PathLike[str], what: str) -> str:
    """`location` as a local path: a path is returned as it was (a trailing separator, which marks a
    dataset output, is kept), a ``file://`` URL as its path. `what` names it in errors ("input")."""
    text = os.fspath(location)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.scheme != "file":
        raise InputError(
            f"{what} {text}: augury batch reads and writes local paths and file:// URLs (also on a file "
            f"system every worker shares), not {parts.scheme}:// yet"
        )
    if parts.netloc not in ("", "localhost"):
        raise InputError(f"{what} {text}: a file:// URL names a path on this machine (file:///path)")
    return unquote(parts.path)

