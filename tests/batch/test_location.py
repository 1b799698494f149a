"""`batch.location`: local paths, file:// URLs and object-store URLs, resolved once at a run's boundary.

Object-store URLs here use fsspec's own in-memory filesystem (``memory://``), served through the same
fsspec branch as ``az://`` or an ``s3://`` without pyarrow's S3 (tests/batch/test_object_store.py runs
pyarrow's S3 against a real server). Every test leaves the process's filesystems as it found them.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from augury.batch import location as loc
from augury.errors import InputError


@pytest.fixture()
def mem() -> Iterator[str]:
    """A prefix of the test's own on fsspec's in-memory filesystem; the filesystems this process had
    opened before are all it has opened after (the in-memory one holds no native thread to fork with)."""
    before = dict(loc._filesystems)
    try:
        yield f"memory://augury-{uuid.uuid4().hex[:8]}/data"
    finally:
        loc._filesystems.clear()
        loc._filesystems.update(before)


@pytest.mark.parametrize("text,url", [
    ("s3://bucket/key", True), ("gs://bucket", True), ("memory://b/x", True), ("abfs://c/p/", True),
    ("file:///tmp/x", False), ("/tmp/x", False), ("preds/", False), ("", False), ("s3:/bucket/key", False),
    (Path("/data/in.parquet"), False),
])
def test_is_url(text: str | Path, url: bool) -> None:
    assert loc.is_url(text) is url


@pytest.mark.parametrize("text,kept", [
    ("preds", "preds"), ("/data/preds/", "/data/preds/"), ("./in.parquet", "./in.parquet"),
    ("file:///data/preds/", "/data/preds/"), ("file://localhost/data/in.csv", "/data/in.csv"),
    ("file:///data/my%20preds/", "/data/my preds/"),
])
def test_a_local_location_is_kept_as_its_path(text: str, kept: str) -> None:
    assert loc.normalize(text, "output") == kept  # (a trailing separator marks a dataset: kept)


@pytest.mark.parametrize("text,message", [
    ("file://server/data/in.csv", "file://server/data/in.csv: a file:// URL names a path on this machine"),
    ("s3:///key", "input s3:///key: an object-store URL names its bucket (s3://BUCKET/...)"),
    ("memory://b/in.csv?region=x", "a URL with options (?...) is not supported"),
    ("memory://b/in.csv#part", "a URL with options (?...) is not supported"),
    ("nosuchscheme://b/in.csv", "input nosuchscheme://b/: no filesystem knows nosuchscheme://"),
])
def test_a_location_that_cannot_be_used_is_one_clear_input_error(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        loc.normalize(text, "input")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_object_store_url_is_checked_and_kept(mem: str) -> None:
    assert loc.normalize(f"{mem}/preds/", "output") == f"{mem}/preds/"


def test_one_filesystem_per_scheme_and_bucket_and_paths_inside_it(mem: str) -> None:
    fs, path = loc.filesystem(f"{mem}/my%20preds/")
    assert isinstance(fs, pafs.FileSystem) and path == f"{mem.removeprefix('memory://')}/my preds"
    assert loc.filesystem(f"{mem}/other")[0] is fs
    assert loc.filesystem(mem.replace("://", "://other-") + "/x")[0] is not fs  # another bucket
    assert loc.used_object_store()


def test_used_object_store_says_whether_this_process_opened_one(mem: str) -> None:
    loc._filesystems.clear()  # (the fixture puts back what was there)
    assert not loc.used_object_store()
    loc.normalize(f"{mem}/in.parquet", "input")
    assert loc.used_object_store()


def test_join_and_url_of() -> None:
    assert loc.join("s3://b/preds/", "part-0.parquet") == "s3://b/preds/part-0.parquet"
    assert loc.join("s3://b/preds", "_manifest.json") == "s3://b/preds/_manifest.json"
    assert loc.join("/data/preds", "x") == "/data/preds/x"
    assert loc.url_of("s3://b/preds/", "b/preds/part-0.parquet") == "s3://b/preds/part-0.parquet"


def test_objects_written_read_listed_and_opened(mem: str, tmp_path: Path) -> None:
    loc.write_bytes(f"{mem}/a/one.txt", b"one\ntwo\n")
    loc.write_bytes(f"{mem}/a/one.txt", b"one\n")  # replaced whole
    loc.write_bytes(f"{mem}/a/b/two.txt", b"2")
    assert loc.read_bytes(f"{mem}/a/one.txt") == b"one\n"
    assert loc.info(f"{mem}/a/one.txt").type == pafs.FileType.File
    assert loc.info(f"{mem}/a/missing.txt").type == pafs.FileType.NotFound
    assert sorted(f.path.rsplit("/", 1)[1] for f in loc.listing(f"{mem}/a")) == ["one.txt", "two.txt"]
    assert [f.path.rsplit("/", 1)[1] for f in loc.listing(f"{mem}/a", recursive=False)] == ["one.txt"]
    assert loc.listing(f"{mem}/nothing") == []  # (files only; nothing there is no error)
    assert loc.size_of(f"{mem}/a/one.txt") == 4
    with loc.open_binary(f"{mem}/a/one.txt") as f:
        assert f.read() == b"one\n"
    fs, path = loc.filesystem(f"{mem}/t.parquet")
    pq.write_table(pa.table({"x": [1, 2, 3]}), path, filesystem=fs)
    assert loc.parquet_file(f"{mem}/t.parquet", buffer_size=1 << 16).read().num_rows == 3
    local = tmp_path / "t.txt"
    local.write_bytes(b"local")
    assert loc.size_of(str(local)) == 5 and loc.open_input(str(local)) == str(local)
    with loc.open_binary(str(local)) as f:
        assert f.read() == b"local"


def test_a_missing_object_is_a_clear_input_error(mem: str) -> None:
    with pytest.raises(InputError, match=r"^input memory://\S+/gone\.csv does not exist$"):
        loc.size_of(f"{mem}/gone.csv")
    with pytest.raises(InputError, match=r"^cannot open memory://\S+/gone\.csv: "):
        loc.open_input(f"{mem}/gone.csv")


def test_the_filesystems_are_dropped_at_exit_before_pyarrow_finalizes() -> None:
    """An S3 filesystem still referenced when pyarrow finalizes S3 at exit can hang the exit
    (apache/arrow#50188): the process's filesystems are dropped by an exit handler that runs first
    (registered after pyarrow's, as exit handlers run last registered first)."""
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('left:', len(sys.modules['augury.batch.location']._filesystems)))\n"
        "from augury.batch import location\n"
        "location.normalize('memory://augury-exit/x', 'input')\n"
        "print('open:', len(location._filesystems))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["open:", "1", "left:", "0"]
