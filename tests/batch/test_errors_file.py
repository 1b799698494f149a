"""`batch.errors_file.ErrorsFile`: the errors file appears whole when its block ends, only if a line was
written; a failure midway leaves none. On real files, and on the session's real S3 endpoint (moto)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs
import pytest

from augury.batch import location as loc
from augury.batch.errors_file import ErrorsFile
from augury.errors import BatchError


def test_a_local_file_appears_whole_when_the_block_ends(tmp_path: Path) -> None:
    target = tmp_path / "p.errors.jsonl"
    with ErrorsFile(str(target)) as out:
        out.write(b'{"row": 1}\n')
        out.write(b'{"row": 4}\n')
        assert not target.exists()  # (written beside it, renamed into place at the end)
    assert out.count == 2 and target.read_bytes() == b'{"row": 1}\n{"row": 4}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.errors.jsonl"]


def test_no_line_leaves_no_file_and_removes_an_earlier_runs(tmp_path: Path) -> None:
    target = tmp_path / "p.errors.jsonl"
    target.write_bytes(b'{"row": 9}\n')
    with ErrorsFile(str(target)) as out:
        pass
    assert out.count == 0 and list(tmp_path.iterdir()) == []


def test_a_failure_midway_leaves_the_earlier_file_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "p.errors.jsonl"
    target.write_bytes(b'{"row": 9}\n')
    with pytest.raises(KeyboardInterrupt), ErrorsFile(str(target)) as out:
        out.write(b'{"row": 1}\n')
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.errors.jsonl"]
    assert target.read_bytes() == b'{"row": 9}\n'


def test_a_file_that_cannot_be_written_is_a_batch_error(tmp_path: Path) -> None:
    target = tmp_path / "gone" / "p.errors.jsonl"
    with pytest.raises(BatchError, match=r"^cannot write the errors file \S+/gone/p\.errors\.jsonl: "), \
            ErrorsFile(str(target)) as out:
        out.write(b'{"row": 1}\n')


def test_an_object_appears_when_its_upload_completes_and_only_with_a_line(s3: str) -> None:
    target = f"{s3}/preds.errors.jsonl"
    with ErrorsFile(target) as out:
        out.write(b'{"row": 1}\n')
    assert loc.read_bytes(target) == b'{"row": 1}\n'
    with ErrorsFile(target):
        pass
    assert loc.info(target).type == pafs.FileType.NotFound  # (the earlier run's removed)


def test_a_failure_midway_leaves_an_earlier_object_as_it_was(s3: str) -> None:
    """(The upload went to the target's own key: closing it on the failure replaced the earlier file, and
    then removed it.)"""
    target = f"{s3}/preds.errors.jsonl"
    loc.write_bytes(target, b'{"row": 9}\n')
    with pytest.raises(KeyboardInterrupt), ErrorsFile(target) as out:
        out.write(b'{"row": 1}\n')
        raise KeyboardInterrupt
    assert loc.read_bytes(target) == b'{"row": 9}\n'
    assert [f.path.rsplit("/", 1)[-1] for f in loc.listing(s3)] == ["preds.errors.jsonl"]
    with ErrorsFile(target) as out:
        out.write(b'{"row": 2}\n')
    assert loc.read_bytes(target) == b'{"row": 2}\n'
    assert [f.path.rsplit("/", 1)[-1] for f in loc.listing(s3)] == ["preds.errors.jsonl"]


@pytest.mark.parametrize("remote", [False, True], ids=["local", "object"])
def test_a_run_without_a_line_removes_a_temporary_file_a_killed_run_left(
        tmp_path: Path, s3: str, remote: bool) -> None:
    """A run killed while writing its file, or on an object store between its copy and its delete, leaves
    the temporary one; the next run with a bad row overwrites it, but one without left it for good."""
    target = f"{s3}/preds.errors.jsonl" if remote else str(tmp_path / "p.errors.jsonl")
    out = ErrorsFile(target)
    for name in (out.tmp, target):
        if remote:
            loc.write_bytes(name, b'{"row": 2}\n')
        else:
            Path(name).write_bytes(b'{"row": 2}\n')
    with ErrorsFile(target):
        pass
    if remote:
        assert loc.listing(s3) == []
    else:
        assert list(tmp_path.iterdir()) == []
