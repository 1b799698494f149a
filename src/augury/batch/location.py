"""Where a batch run reads and writes: a local path or a URL, resolved once at the run's boundary.

Inputs and outputs are addressed as URLs so that a distributed engine's workers open them themselves:
every task and the staging location are handed to the workers as strings (an absolute path or a URL),
never as file handles or data. A location is

- a local path (also on a file system every worker shares) or a ``file://`` URL, read and written with
  Python's and pyarrow's own file functions, exactly as before object stores were supported;
- an object-store URL (``s3://bucket/key``, ``gs://``, ...), opened through a `pyarrow.fs` filesystem:
  pyarrow's own S3 and GCS filesystems where this pyarrow has them (the usual wheels do), else any
  bucket-style filesystem fsspec knows (``s3fs``, ``gcsfs``, ``adlfs``...: paths ``bucket/key``),
  wrapped for pyarrow. A missing package is a `MissingExtraError` naming the extra to install.
  Credentials, region and endpoint come from the environment, as for the provider's own tools
  (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ~/.aws...), where every worker finds them too.

An object store has no rename, so a run commits its output there otherwise (`object_output`).
"""

from __future__ import annotations

import atexit
import os
from typing import Any, BinaryIO, cast
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from augury.errors import InputError, MissingExtraError

#: schemes pyarrow's own filesystems serve (fsspec serves them where this pyarrow lacks one).
_NATIVE = {"s3", "gs", "gcs"}
#: the augury extra and the fsspec package for the object stores most used, when pyarrow lacks its own.
_EXTRAS = {"s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"), "gs": ("gcs", "gcsfs"), "gcs": ("gcs", "gcsfs"),
           "az": ("azure", "adlfs"), "abfs": ("azure", "adlfs"), "abfss": ("azure", "adlfs")}
#: the read buffer of a text file or a planner's scan on an object store (each read is a request).
REMOTE_BUFFER_BYTES = 1 << 20


def is_url(location: str | os.PathLike[str]) -> bool:
    """Whether `location` is an object-store URL (any scheme but ``file``)."""
    text = os.fspath(location)
    return "://" in text and urlsplit(text).scheme not in ("", "file")


def normalize(location: str | os.PathLike[str], what: str) -> str:
    """`location` as a run keeps it: a local path as it was (a trailing separator, which marks a dataset
    output, is kept), a ``file://`` URL as its path, an object-store URL checked (a bucket, no query) and
    its filesystem found. `what` names it in errors ("input")."""
    text = os.fspath(location)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InputError(f"{what} {text}: a file:// URL names a path on this machine (file:///path)")
        return unquote(parts.path)
    if not parts.netloc:
        raise InputError(f"{what} {text}: an object-store URL names its bucket ({parts.scheme}://BUCKET/...)")
    if parts.query or parts.fragment:
        raise InputError(f"{what} {text}: a URL with options (?...) is not supported; set the endpoint "
                         f"and credentials in the environment (e.g. AWS_ENDPOINT_URL, AWS_PROFILE)")
    filesystem(text, what)  # a missing package or an unknown scheme fails here, in one line
    return text


def filesystem(url: str, what: str = "location") -> tuple[pafs.FileSystem, str]:
    """The filesystem of an object-store `url` and the path of `url` inside it (``bucket/key``); one
    filesystem per scheme and bucket in a process, made the first time."""
    parts = urlsplit(url)
    fs = _filesystems.get((parts.scheme, parts.netloc))
    if fs is None:
        fs = _filesystems[(parts.scheme, parts.netloc)] = _filesystem(parts.scheme, parts.netloc, what)
    return fs, f"{parts.netloc}{unquote(parts.path)}".rstrip("/")


#: the filesystem of each (scheme, bucket) this process opened (cleared at exit: `_forget_filesystems`).
_filesystems: dict[tuple[str, str], pafs.FileSystem] = {}


def _filesystem(scheme: str, netloc: str, what: str) -> pafs.FileSystem:
    root = f"{scheme}://{netloc}/"
    if scheme in _NATIVE:
        try:
            return pafs.FileSystem.from_uri(root)[0]
        except (ImportError, pa.ArrowNotImplementedError):
            pass  # this pyarrow was built without it: fsspec's then
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{what} {root}: {exc}") from exc
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem
    except ImportError as exc:
        extra, package = _EXTRAS.get(scheme, ("s3", "fsspec"))
        raise MissingExtraError(f"{scheme}:// URLs", extra, package) from exc
    try:
        return PyFileSystem(FSSpecHandler(fsspec.filesystem(scheme)))
    except ImportError as exc:
        if scheme in _EXTRAS:
            raise MissingExtraError(f"{scheme}:// URLs", *_EXTRAS[scheme]) from exc
        raise InputError(f"{what} {root}: {exc}") from exc
    except ValueError as exc:
        raise InputError(f"{what} {root}: no filesystem knows {scheme}:// ({exc})") from exc


def used_object_store() -> bool:
    """Whether this process has opened an object store's filesystem (its client's native threads make
    forking unsafe: `children.start_method`)."""
    return bool(_filesystems)


@atexit.register
def _forget_filesystems() -> None:
    """Drop the filesystems before pyarrow finalizes S3 at exit (its handler, registered when pyarrow.fs
    was imported, runs after this one): an S3 filesystem still referenced then can hang the exit
    (apache/arrow#50188)."""
    _filesystems.clear()


def join(base: str, name: str) -> str:
    """`name` inside the folder or prefix `base` (a URL or a local path)."""
    return f"{base.rstrip('/')}/{name}" if is_url(base) else os.path.join(base, name)


def info(url: str) -> pafs.FileInfo:
    """What is at an object-store `url` (`type` NotFound when nothing)."""
    fs, path = filesystem(url)
    try:
        return fs.get_file_info(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot reach {url}: {exc}") from exc


def listing(url: str, recursive: bool = True) -> list[pafs.FileInfo]:
    """The files under the prefix `url` (none when there is nothing), their paths inside the filesystem."""
    fs, path = filesystem(url)
    try:
        found = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot list {url}: {exc}") from exc
    return [f for f in found if f.type == pafs.FileType.File]


def url_of(template: str, path: str) -> str:
    """The URL of `path` (a path inside the filesystem of `template`, as `listing` returns them)."""
    return f"{urlsplit(template).scheme}://{path}"


def size_of(file: str) -> int:
    """The size in bytes of the input file `file` (a local path or a URL)."""
    if not is_url(file):
        return os.stat(file).st_size
    found = info(file)
    if found.type != pafs.FileType.File or found.size is None:
        raise InputError(f"input {file} does not exist")
    return int(found.size)


def open_input(file: str) -> Any:
    """`file` opened for random access: a local path as it is (pyarrow opens it), a URL as a pyarrow file."""
    if not is_url(file):
        return file
    fs, path = filesystem(file)
    try:
        return fs.open_input_file(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot open {file}: {exc}") from exc


def open_binary(file: str) -> BinaryIO:
    """`file` as a seekable binary stream, buffered by `REMOTE_BUFFER_BYTES` on an object store (where
    every read is a request)."""
    if not is_url(file):
        return open(file, "rb")
    import io

    return cast(BinaryIO, io.BufferedReader(open_input(file), REMOTE_BUFFER_BYTES))


def parquet_file(file: str, **kwargs: Any) -> pq.ParquetFile:
    """A Parquet file at a local path or URL; on an object store its column chunks are fetched whole
    (`pre_buffer`: one request each, not one per 64 KiB read)."""
    if is_url(file):
        kwargs = {**kwargs, "pre_buffer": True}
        kwargs.pop("buffer_size", None)
    return pq.ParquetFile(open_input(file), **kwargs)


def write_bytes(url: str, data: bytes) -> None:
    """Write `data` to the object `url`: it appears whole or not at all (an object store shows an
    object only once its upload completes), replacing any object of that name."""
    fs, path = filesystem(url)
    with fs.open_output_stream(path) as out:
        out.write(data)


def read_bytes(url: str) -> bytes:
    fs, path = filesystem(url)
    with fs.open_input_stream(path) as f:
        return bytes(f.read())
