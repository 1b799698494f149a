"""`batch.object_output` with two runs on one dataset at once (the supported use is one at a time), against
the session's real S3 endpoint: each interleaving is forced by running the other run's step inside one of
this run's requests. Whatever the order, no run exits 0 over a manifest naming a part that is gone."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow.fs as pafs
import pytest
from object_runs import FINGERPRINT, PLAN, manifest_parts, names, uploaded

from augury.batch import location as loc
from augury.batch.dataset import MANIFEST, read_manifest
from augury.batch.object_attempt import PartUpload
from augury.batch.object_output import ObjectOutput
from augury.errors import BatchError, InputError

ONE_TASK = ["00000-000000"]
TWO_TASKS = ["00000-000000", "00000-000001"]


def race_on_a_damaged_manifest(s3: str) -> tuple[ObjectOutput, ObjectOutput, str]:
    """A then B start while the manifest cannot be read; each uploads its part (B's `found` holds A's)."""
    loc.write_bytes(f"{s3}/preds/{MANIFEST}", b"{damaged")
    a = ObjectOutput(f"{s3}/preds")
    a.prepare(FINGERPRINT, PLAN, False, [])
    part_a = uploaded(a.staging, "00000-000000", 5).part
    a.markers()
    b = ObjectOutput(f"{s3}/preds")
    b.prepare(FINGERPRINT, PLAN, False, [])
    uploaded(b.staging, "00000-000000", 7)
    assert part_a in b.found
    return a, b, part_a


def commits_after_read_back(a: ObjectOutput, b: ObjectOutput, monkeypatch: pytest.MonkeyPatch,
                            tasks: list[str], rows: int) -> list[bool | None]:
    """A commits `tasks` (`rows` rows) just after B has read its own manifest back; B's answers to
    "is the manifest mine?", in order."""
    check = b._manifest_is
    calls: list[bool | None] = []

    def then_a_commits(written: bytes, *rest: str) -> bool | None:
        ours = check(written, *rest)
        calls.append(ours)
        if len(calls) == 1:
            assert a.commit(tasks, FINGERPRINT) == rows
        return ours

    monkeypatch.setattr(b, "_manifest_is", then_a_commits)
    return calls


def commits_after_manifest(a: ObjectOutput, b: ObjectOutput, monkeypatch: pytest.MonkeyPatch,
                           tasks: list[str], rows: int) -> None:
    """A commits `tasks` (`rows` rows) just after B's manifest is written, before B's cleanup."""
    write = b._write

    def then_a_commits(url: str, data: bytes) -> None:
        write(url, data)
        if url.endswith(MANIFEST):
            assert a.commit(tasks, FINGERPRINT) == rows

    monkeypatch.setattr(b, "_write", then_a_commits)


def part_removed_with_the_manifest(output: ObjectOutput, part: str, monkeypatch: pytest.MonkeyPatch,
                                   then: Callable[[], None] = lambda: None) -> None:
    """Another run removes `part` just before `output` writes its manifest (after its check); `then`
    runs after the manifest is written."""
    write = output._write

    def removed_first(url: str, data: bytes) -> None:
        if url.endswith(MANIFEST):
            fs, path = loc.filesystem(f"{output.url}/{part}")
            fs.delete_file(path)
        write(url, data)
        if url.endswith(MANIFEST):
            then()

    monkeypatch.setattr(output, "_write", removed_first)


def one_part_run(s3: str) -> tuple[ObjectOutput, str]:
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    return output, uploaded(output.staging, "00000-000000", 3).part


def two_drivers_of_one_run(s3: str) -> tuple[ObjectOutput, ObjectOutput, str, PartUpload, PartUpload]:
    """A run (A) whose driver is still alive when a `--resume` (B) of the same run starts: both drivers
    score task 1, and choose different attempts of it (A listed the markers before the smaller attempt's
    appeared; B sees both and chooses the smaller). Returns A, B, task 0's part, A's and B's choice."""
    a = ObjectOutput(f"{s3}/preds")
    a.prepare(FINGERPRINT, PLAN, False, [])
    part0 = uploaded(a.staging, "00000-000000", 3).part
    a.markers()
    b = ObjectOutput(f"{s3}/preds")
    assert b.prepare(FINGERPRINT, PLAN, True, [])[0] == {"00000-000000"} and b.run_id == a.run_id
    small, large = sorted((uploaded(a.staging, "00000-000001", 4) for _ in range(2)), key=lambda u: u.attempt)
    a.seen.add(f"done-00000-000001-{small.attempt}.json")  # (A listed before this marker appeared)
    assert a.markers()["00000-000001"].part == large.part and b.markers()["00000-000001"].part == small.part
    return a, b, part0, large, small


def test_two_runs_at_once_while_the_manifest_cannot_be_read_leave_a_readable_dataset(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged manifest: B, starting while A runs, keeps A's parts (it cannot tell them from the
    committed dataset's), so A is not stopped and B's `found` holds A's part. A's manifest lands between
    B's manifest and B's cleanup: B must not remove the parts A's manifest lists (it did: the dataset
    named a missing part, and both runs succeeded). Both succeed; the dataset is A's, whole."""
    a, b, part_a = race_on_a_damaged_manifest(s3)
    commits_after_manifest(a, b, monkeypatch, ONE_TASK, 5)
    assert b.commit(ONE_TASK, FINGERPRINT) == 7
    assert manifest_parts(f"{s3}/preds") == [part_a]
    assert names(f"{s3}/preds") == [MANIFEST, part_a]  # (A's commit replaced B's manifest: B's part went)
    c = ObjectOutput(f"{s3}/preds")
    c.prepare(FINGERPRINT, PLAN, False, [])
    part_c = uploaded(c.staging, "00000-000000", 2).part
    c.commit(ONE_TASK, FINGERPRINT)
    assert names(f"{s3}/preds") == [MANIFEST, part_c]


def test_a_cleanup_that_removes_what_another_runs_manifest_just_listed_is_an_error(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The moment no check closes (no conditional write): A's manifest lands after B has read its own
    back, and B removes A's part. The dataset names a missing part until a run completes; B says so."""
    a, b, part_a = race_on_a_damaged_manifest(s3)
    calls = commits_after_read_back(a, b, monkeypatch, ONE_TASK, 5)
    with pytest.raises(BatchError, match=rf"1 part\(s\) the manifest of \S+ lists \({part_a}, \.\.\.\) were "
                                         r"removed by a run on the same dataset at the same time"):
        b.commit(ONE_TASK, FINGERPRINT)
    assert calls == [True, False]


def test_a_commit_whose_part_another_run_removes_after_its_check_is_an_error(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run removes this run's part between `commit`'s check and its manifest: the manifest names
    a missing part, and the run says so instead of succeeding."""
    output, part = one_part_run(s3)
    part_removed_with_the_manifest(output, part, monkeypatch)
    with pytest.raises(BatchError, match=rf"\({part}, \.\.\.\) were removed by a run on the same dataset"):
        output.commit(ONE_TASK, FINGERPRINT)


def test_two_drivers_of_one_run_committing_one_after_the_other_leave_a_readable_dataset(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """B commits between A's manifest and A's cleanup. A's cleanup removed every part with the run's id
    that A had not chosen, though the manifest it read back was B's: B's choice went, both runs exited 0,
    and the dataset named a missing part. Now a run whose manifest was replaced removes no part."""
    a, b, part0, _, small = two_drivers_of_one_run(s3)
    commits_after_manifest(b, a, monkeypatch, TWO_TASKS, 7)
    assert a.commit(TWO_TASKS, FINGERPRINT) == 7
    assert manifest_parts(f"{s3}/preds") == [part0, small.part]
    assert names(f"{s3}/preds") == sorted([MANIFEST, part0, small.part])  # (B's cleanup removed A's choice)


def test_two_drivers_of_one_run_a_cleanup_that_removes_the_others_new_choice_is_an_error(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commits after B has read its own manifest back, and B's cleanup removes A's choice (a part with
    B's own run id, which B did not check again): both exited 0 over a dataset naming a missing part."""
    a, b, _, large, _ = two_drivers_of_one_run(s3)
    calls = commits_after_read_back(a, b, monkeypatch, TWO_TASKS, 7)
    with pytest.raises(BatchError, match=rf"1 part\(s\) the manifest of \S+ lists \({large.part}, \.\.\.\) "
                                         r"were removed by a run on the same dataset at the same time"):
        b.commit(TWO_TASKS, FINGERPRINT)
    assert calls == [True, False]
    with pytest.raises(InputError, match=rf"the part {large.part} its manifest lists is missing"):
        read_manifest(f"{s3}/preds")  # (until a run completes, as B says)


def test_a_new_run_removes_an_interrupted_runs_state_but_no_part(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "interrupted" run A is alive and commits while B's prepare discards it. B's prepare read the
    manifest, listed the prefix and removed A's parts the manifest did not list: A's commit landing
    between (here: when B read the manifest) lost its part, A exited 0, and nothing checked. B's prepare
    now removes A's state only; B's commit removes A's parts (found at B's start), checked."""
    committed = ObjectOutput(f"{s3}/preds")
    committed.prepare(FINGERPRINT, PLAN, False, [])
    uploaded(committed.staging, "00000-000000", 2)
    committed.commit(ONE_TASK, FINGERPRINT)
    a = ObjectOutput(f"{s3}/preds")
    a.prepare(FINGERPRINT, PLAN, False, [])
    part_a = uploaded(a.staging, "00000-000000", 3).part
    a.markers()
    b = ObjectOutput(f"{s3}/preds")
    listed = b._listed
    rows: list[int] = []

    def then_a_commits(otherwise: str) -> set[str] | None:
        got = listed(otherwise)
        if not rows:
            rows.append(a.commit(ONE_TASK, FINGERPRINT))
        return got

    monkeypatch.setattr(b, "_listed", then_a_commits)
    notes: list[str] = []
    b.prepare(FINGERPRINT, PLAN, False, notes)
    assert notes == ["discarded an interrupted run's 1 finished task(s); pass --resume to continue one"]
    if not rows:  # (B's prepare no longer reads the manifest: A commits after it)
        rows.append(a.commit(ONE_TASK, FINGERPRINT))
    assert rows == [3] and manifest_parts(f"{s3}/preds") == [part_a]
    monkeypatch.undo()
    part_b = uploaded(b.staging, "00000-000000", 5).part
    assert b.commit(ONE_TASK, FINGERPRINT) == 5
    assert names(f"{s3}/preds") == [MANIFEST, part_b]


def test_an_interrupted_runs_parts_outlive_its_state_and_go_with_the_next_commit(s3: str) -> None:
    """An interrupted run's parts outlive its state now; the next commit removes them, and a resume of
    the discarded run finds the new run's state, not the old one's."""
    old = ObjectOutput(f"{s3}/preds")
    old.prepare(FINGERPRINT, PLAN, False, [])
    stray = uploaded(old.staging, "00000-000000", 3).part
    new = ObjectOutput(f"{s3}/preds")
    new.prepare(FINGERPRINT, PLAN, False, [])
    assert stray in new.found and names(f"{s3}/preds") == ["_augury-run/run.json", stray]
    resumed = ObjectOutput(f"{s3}/preds")
    assert resumed.prepare(FINGERPRINT, PLAN, True, [])[0] == set() and resumed.run_id == new.run_id
    part = uploaded(resumed.staging, "00000-000000", 4).part
    assert resumed.commit(ONE_TASK, FINGERPRINT) == 4
    assert names(f"{s3}/preds") == [MANIFEST, part]


def test_a_cleanup_that_cannot_read_the_manifest_again_cannot_tell_and_says_so(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the test above of a cleanup removing A's part, but B's second read of A's manifest fails (a
    failed request): B found nothing lost and exited 0, with a warning, over a dataset naming a missing
    part."""
    a, b, part_a = race_on_a_damaged_manifest(s3)
    commits_after_read_back(a, b, monkeypatch, ONE_TASK, 5)
    listed = b._listed
    reads: list[str] = []

    def fails_the_second_time(otherwise: str) -> set[str] | None:
        reads.append(otherwise)  # (the first: the commit's, of the manifest it replaces)
        return None if len(reads) == 2 else listed(otherwise)

    monkeypatch.setattr(b, "_listed", fails_the_second_time)
    with pytest.raises(BatchError, match=rf"cannot tell whether the 1 part\(s\) this run removed from \S+ "
                                         rf"after its commit \({part_a}, \.\.\.\) include one the dataset's "
                                         r"manifest lists now; run again, one at a time"):
        b.commit(ONE_TASK, FINGERPRINT)
    assert len(reads) == 2


def test_a_cleanup_stopped_partway_still_checks_what_it_removed(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """B removes A's part, then fails to remove a stray that A's cleanup removed first: the failure was
    logged and the check of what B had removed skipped, so B exited 0 over a dataset naming a missing
    part."""
    loc.write_bytes(f"{s3}/preds/part-99999-999999.parquet", b"")  # (a stray, of no run: sorted last)
    a, b, part_a = race_on_a_damaged_manifest(s3)
    commits_after_read_back(a, b, monkeypatch, ONE_TASK, 5)
    with pytest.raises(BatchError, match=rf"1 part\(s\) the manifest of \S+ lists \({part_a}, \.\.\.\) were "
                                         r"removed by a run on the same dataset at the same time"):
        b.commit(ONE_TASK, FINGERPRINT)
    assert "part-99999-999999.parquet" not in names(f"{s3}/preds")


def test_a_commit_that_cannot_read_its_manifest_back_while_a_part_it_names_is_gone_says_so(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its part removed by another run after `commit` checked it, and its read-back fails: it cannot
    tell whether its manifest (naming the missing part) is the dataset's."""
    output, part = one_part_run(s3)
    part_removed_with_the_manifest(output, part, monkeypatch)
    monkeypatch.setattr(output, "_manifest_is", lambda *args: None)  # (a failed request)
    with pytest.raises(BatchError, match=rf"cannot tell whether the manifest of \S+ this run wrote stands, "
                                         rf"and it names 1 part\(s\) that are gone \({part}, \.\.\.\)"):
        output.commit(ONE_TASK, FINGERPRINT)


def test_a_commit_that_cannot_list_its_parts_after_its_manifest_says_so(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its part removed by another run after `commit` checked it, and the listing after the manifest
    fails (a failed request): the failure was logged as a cleanup's, and the run exited 0."""
    output, part = one_part_run(s3)

    def fails(url: str, recursive: bool = True) -> list[pafs.FileInfo]:
        raise InputError(f"cannot list {url}: a failed request")

    part_removed_with_the_manifest(output, part, monkeypatch,
                                   then=lambda: monkeypatch.setattr(loc, "listing", fails))
    with pytest.raises(BatchError, match=r"cannot tell whether every part the manifest of \S+ this run "
                                         r"wrote names is still there: cannot list \S+: a failed request"):
        output.commit(ONE_TASK, FINGERPRINT)
    monkeypatch.undo()
    with pytest.raises(InputError, match=rf"the part {part} its manifest lists is missing"):
        read_manifest(f"{s3}/preds")
