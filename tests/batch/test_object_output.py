"""`batch.object_output`: a dataset on an object store, committed by its manifest, against the session's
real S3 endpoint (moto's server: `conftest.s3_env`). The runs through `run_batch` are in
test_object_store.py; these pin the pieces' contracts: names, markers, run state, refusals."""

from __future__ import annotations

import re

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from augury.batch import location as loc
from augury.batch.dataset import MANIFEST, read_manifest
from augury.batch.object_attempt import PartUpload, dataset_of, run_of, staging_of
from augury.batch.object_output import ObjectOutput
from augury.batch.sources import Plan
from augury.errors import BatchError, InputError

FINGERPRINT = {"input": [{"path": "s3://b/in.parquet", "size": 10}], "model_version": "1"}
PLAN = Plan(task_rows=100)


def names(url: str) -> list[str]:
    prefix = loc.filesystem(url)[1] + "/"
    return sorted(f.path[len(prefix):] for f in loc.listing(url))


def uploaded(staging: str, task_id: str, rows: int, errors: pa.Table | None = None) -> PartUpload:
    """A task's attempt, done as a worker does it: the part streamed, then committed."""
    upload = PartUpload(staging, task_id)
    with pq.ParquetWriter(upload.open(), pa.schema([("value", pa.float64())])) as writer:
        writer.write_table(pa.table({"value": pa.array(range(rows), pa.float64())}))
    upload.commit(rows, errors)
    return upload


def test_names_of_a_runs_state_and_parts(s3: str) -> None:
    staging = staging_of(f"{s3}/preds", "0123abcd")
    assert staging == f"{s3}/preds/_augury-run/0123abcd"
    assert dataset_of(staging) == (f"{s3}/preds", "0123abcd")
    with pytest.raises(BatchError, match="is not a run's staging location"):
        dataset_of(f"{s3}/preds/elsewhere/0123abcd")
    assert run_of("part-00000-000002-0123abcd89abcdef.parquet") == "0123abcd"
    assert run_of("part-00000-000002.parquet") is None  # a local run's part, uploaded as it was
    upload = PartUpload(staging, "00000-000002")
    assert upload.part == f"part-00000-000002-0123abcd{upload.attempt}.parquet" and len(upload.attempt) == 8
    assert run_of(upload.part) == "0123abcd" and upload.url == f"{s3}/preds/{upload.part}"


def test_an_attempt_commits_its_part_then_errors_then_marker(s3: str) -> None:
    staging = staging_of(f"{s3}/preds", "0123abcd")
    errors = pa.table({"row": [3], "file": ["in.csv"], "key": [None], "reason": ["bad"]})
    upload = uploaded(staging, "00000-000000", 5, errors)
    marker = orjson.loads(loc.read_bytes(f"{staging}/done-00000-000000-{upload.attempt}.json"))
    assert marker == {"part": upload.part, "scored": 5, "failed": 1,
                      "errors": f"errors-00000-000000-{upload.attempt}.parquet"}
    fs, path = loc.filesystem(upload.url)
    assert pq.read_table(path, filesystem=fs).num_rows == 5
    upload.abort()  # (after its commit: nothing to undo)
    assert upload.part in names(f"{s3}/preds")


def test_an_aborted_attempt_leaves_no_part_and_no_marker(s3: str) -> None:
    staging = staging_of(f"{s3}/preds", "0123abcd")
    upload = PartUpload(staging, "00000-000000")
    upload.open().write(b"half a part")
    upload.abort()
    assert names(f"{s3}/preds") == []


def test_one_marker_per_task_the_first_seen_and_of_several_the_smallest_attempt(s3: str) -> None:
    output = ObjectOutput(f"{s3}/preds/")
    assert output.url == f"{s3}/preds"
    output.prepare(FINGERPRINT, PLAN, False, [])
    twins = sorted((uploaded(output.staging, "00000-000000", 2) for _ in range(2)), key=lambda u: u.attempt)
    first = output.markers()["00000-000000"]
    assert first.attempt == twins[0].attempt and first.part == twins[0].part
    uploaded(output.staging, "00000-000000", 2)  # a third attempt, seen later: the choice stands
    assert output.markers()["00000-000000"] == first and output.task_rows("00000-000000") == (2, 0)


def test_a_damaged_marker_is_a_batch_error_naming_it(s3: str) -> None:
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    loc.write_bytes(f"{output.staging}/done-00000-000000-0000beef.json", b'{"part": "x.parquet"}')
    with pytest.raises(BatchError, match=r"cannot read the commit marker \S+/done-00000-000000-0000beef"):
        output.markers()


def test_a_run_records_its_state_and_a_resume_checks_it(s3: str) -> None:
    output = ObjectOutput(f"{s3}/preds")
    assert output.prepare(FINGERPRINT, PLAN, False, []) == (set(), PLAN)
    recorded = orjson.loads(loc.read_bytes(output.run_file))
    assert recorded == {**FINGERPRINT, "plan": PLAN.to_dict(), "run_id": output.run_id}
    uploaded(output.staging, "00000-000000", 3)
    again = ObjectOutput(f"{s3}/preds")
    assert again.prepare(FINGERPRINT, Plan(7, 8), True, []) == ({"00000-000000"}, PLAN)
    assert again.run_id == output.run_id
    with pytest.raises(BatchError, match="cannot resume: the model_version changed since the interrupted"):
        ObjectOutput(f"{s3}/preds").prepare({**FINGERPRINT, "model_version": "2"}, PLAN, True, [])


@pytest.mark.parametrize("run_json,message", [
    (b'{"run_id": ', r"cannot resume: cannot read \S+/_augury-run/run\.json: .*; rerun without --resume to "
                    r"start over"),
    (b'["run_id", "0123abcd"]', r"cannot resume: cannot read \S+/run\.json: it holds list, not an object; "
                                r"rerun without --resume to start over"),
    (orjson.dumps({**FINGERPRINT, "plan": {"task_rows": "many"}, "run_id": "0123abcd"}),
     r"cannot resume: cannot read \S+/run\.json: the plan .* does not say how the input was cut; rerun"),
], ids=["not-json", "not-an-object", "not-a-plan"])
def test_damaged_run_state_is_one_batch_error(s3: str, run_json: bytes, message: str) -> None:
    loc.write_bytes(f"{s3}/preds/_augury-run/run.json", run_json)
    with pytest.raises(BatchError, match=message):
        ObjectOutput(f"{s3}/preds").prepare(FINGERPRINT, PLAN, True, [])


def test_only_a_prefix_of_a_datasets_objects_may_be_replaced(s3: str) -> None:
    ObjectOutput(f"{s3}/empty").check_replaceable()
    for name in (MANIFEST, "part-00000-000000-0123abcd0000beef.parquet", "_augury-run/0123abcd/done-x.json"):
        loc.write_bytes(f"{s3}/preds/{name}", b"")
    ObjectOutput(f"{s3}/preds").check_replaceable()
    loc.write_bytes(f"{s3}/mine/notes.txt", b"keep me")
    loc.write_bytes(f"{s3}/mine/sub/part-0.parquet", b"")  # (a part's name, but not in the dataset's place)
    with pytest.raises(InputError, match=r"holds objects that are not a prediction dataset's "
                                         r"\(notes\.txt, sub/part-0\.parquet\); choose a new or empty"):
        ObjectOutput(f"{s3}/mine").check_replaceable()
    with pytest.raises(InputError, match="the bucket no-such-bucket-4c1 does not exist"):
        ObjectOutput("s3://no-such-bucket-4c1/preds").check_replaceable()


def test_a_commit_needs_every_tasks_marker_and_a_row(s3: str) -> None:
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    uploaded(output.staging, "00000-000000", 0)
    with pytest.raises(BatchError, match=r"task 00000-000001 has no commit marker in \S+ \(and 0 more\): "
                                         r"rerun with --resume to score them"):
        output.commit(["00000-000000", "00000-000001"], FINGERPRINT)
    with pytest.raises(BatchError, match=r"^no row of the input could be scored$"):
        output.commit(["00000-000000"], FINGERPRINT)
    assert MANIFEST not in names(f"{s3}/preds")


def manifest_parts(url: str) -> list[str]:
    return [p.name for p in read_manifest(url).parts]  # (InputError if a part it lists is missing)


def test_two_runs_at_once_while_the_manifest_cannot_be_read_leave_a_readable_dataset(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A damaged manifest: B, starting while A runs, keeps A's parts (it cannot tell them from the
    committed dataset's), so A is not stopped and B's `found` holds A's part. A's manifest lands between
    B's manifest and B's cleanup: B must not remove the parts A's manifest lists (it did: the dataset
    named a missing part, and both runs succeeded). Both succeed; the dataset is A's, whole."""
    loc.write_bytes(f"{s3}/preds/{MANIFEST}", b"{damaged")
    a = ObjectOutput(f"{s3}/preds")
    a.prepare(FINGERPRINT, PLAN, False, [])
    part_a = uploaded(a.staging, "00000-000000", 5).part
    a.markers()
    b = ObjectOutput(f"{s3}/preds")
    b.prepare(FINGERPRINT, PLAN, False, [])
    assert part_a in b.found
    uploaded(b.staging, "00000-000000", 7)
    write = b._write

    def then_a_commits(url: str, data: bytes) -> None:
        write(url, data)
        if url.endswith(MANIFEST):
            assert a.commit(["00000-000000"], FINGERPRINT) == 5

    monkeypatch.setattr(b, "_write", then_a_commits)
    assert b.commit(["00000-000000"], FINGERPRINT) == 7
    assert manifest_parts(f"{s3}/preds") == [part_a]
    assert names(f"{s3}/preds") == [MANIFEST, part_a]  # (A's commit replaced B's manifest: B's part went)
    c = ObjectOutput(f"{s3}/preds")
    c.prepare(FINGERPRINT, PLAN, False, [])
    part_c = uploaded(c.staging, "00000-000000", 2).part
    c.commit(["00000-000000"], FINGERPRINT)
    assert names(f"{s3}/preds") == [MANIFEST, part_c]


def test_a_cleanup_that_removes_what_another_runs_manifest_just_listed_is_an_error(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The moment no check closes (no conditional write): A's manifest lands after B has read its own
    back, and B removes A's part. The dataset names a missing part until a run completes; B says so."""
    loc.write_bytes(f"{s3}/preds/{MANIFEST}", b"{damaged")
    a = ObjectOutput(f"{s3}/preds")
    a.prepare(FINGERPRINT, PLAN, False, [])
    part_a = uploaded(a.staging, "00000-000000", 5).part
    a.markers()
    b = ObjectOutput(f"{s3}/preds")
    b.prepare(FINGERPRINT, PLAN, False, [])
    uploaded(b.staging, "00000-000000", 7)
    check = b._manifest_is
    calls = []

    def then_a_commits(written: bytes, *rest: str) -> bool | None:
        ours = check(written, *rest)
        calls.append(ours)
        if len(calls) == 1:
            assert a.commit(["00000-000000"], FINGERPRINT) == 5
        return ours

    monkeypatch.setattr(b, "_manifest_is", then_a_commits)
    with pytest.raises(BatchError, match=rf"1 part\(s\) the manifest of \S+ lists \({part_a}, \.\.\.\) were "
                                         r"removed by a run on the same dataset at the same time"):
        b.commit(["00000-000000"], FINGERPRINT)
    assert calls == [True, False]


def test_a_commit_whose_part_another_run_removes_after_its_check_is_an_error(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another run removes this run's part between `commit`'s check and its manifest: the manifest names
    a missing part, and the run says so instead of succeeding."""
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    part = uploaded(output.staging, "00000-000000", 3).part
    write = output._write

    def removed_first(url: str, data: bytes) -> None:
        if url.endswith(MANIFEST):
            fs, path = loc.filesystem(f"{s3}/preds/{part}")
            fs.delete_file(path)
        write(url, data)

    monkeypatch.setattr(output, "_write", removed_first)
    with pytest.raises(BatchError, match=rf"\({part}, \.\.\.\) were removed by a run on the same dataset"):
        output.commit(["00000-000000"], FINGERPRINT)


@pytest.mark.parametrize("text", [b"null", b"[]"])
def test_a_manifest_that_is_json_but_not_an_object_is_taken_for_an_unreadable_one(
        s3: str, text: bytes, caplog: pytest.LogCaptureFixture) -> None:
    """(It crashed with an AttributeError.) The commit replaces it, and logs that it cannot be read."""
    loc.write_bytes(f"{s3}/preds/{MANIFEST}", text)
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    part = uploaded(output.staging, "00000-000000", 4).part
    with caplog.at_level("WARNING", logger="augury.batch.object_output"):
        assert output.commit(["00000-000000"], FINGERPRINT) == 4
    assert "it holds" in caplog.text and "not an object" in caplog.text
    assert manifest_parts(f"{s3}/preds") == [part] and names(f"{s3}/preds") == [MANIFEST, part]


def test_a_resume_after_a_cleanup_killed_midway_chooses_the_attempt_whose_part_is_there(s3: str) -> None:
    """A task retried (Dask) has two attempts; the commit chose one, and its cleanup removed the other's
    part but was killed before the markers went. The resume chose the smallest attempt, whose part was
    gone, and its commit failed ('another run ... removes them') on every rerun."""
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    first, second = sorted((uploaded(output.staging, "00000-000000", 2) for _ in range(2)),
                           key=lambda u: u.attempt)
    fs, path = loc.filesystem(first.url)
    fs.delete_file(path)
    resumed = ObjectOutput(f"{s3}/preds")
    assert resumed.prepare(FINGERPRINT, PLAN, True, [])[0] == {"00000-000000"}
    assert resumed.chosen["00000-000000"].attempt == second.attempt
    assert resumed.commit(["00000-000000"], FINGERPRINT) == 2
    assert manifest_parts(f"{s3}/preds") == [second.part] and names(f"{s3}/preds") == [MANIFEST, second.part]


def test_discarding_an_interrupted_run_that_wrote_no_marker_removes_its_state_without_a_warning(
        s3: str, caplog: pytest.LogCaptureFixture) -> None:
    """Its staging folder never existed: removing it raised on S3 and stopped the rest of the cleanup
    (its run.json stayed), with a warning that something could not be removed."""
    ObjectOutput(f"{s3}/preds").prepare(FINGERPRINT, PLAN, False, [])
    notes: list[str] = []
    with caplog.at_level("WARNING", logger="augury.batch.object_output"):
        ObjectOutput(f"{s3}/preds").prepare(FINGERPRINT, PLAN, False, notes)
    assert notes == ["discarded an interrupted run's 0 finished task(s); pass --resume to continue one"]
    assert "could not remove" not in caplog.text
    done = ObjectOutput(f"{s3}/preds")
    done._remove_run(str((done._read_run() or {})["run_id"]))
    assert names(f"{s3}/preds") == []


@pytest.mark.parametrize("run_json", [b'{"run_id": ', b'["run_id", "0123abcd"]'],
                         ids=["not-json", "not-an-object"])
def test_a_run_without_resume_starts_over_from_damaged_run_state(s3: str, run_json: bytes) -> None:
    """As a local run does (it blocked every run until run.json was removed by hand): the state of every
    run found goes, and no part; the commit removes those no manifest lists."""
    committed = ObjectOutput(f"{s3}/preds")
    committed.prepare(FINGERPRINT, PLAN, False, [])
    kept = uploaded(committed.staging, "00000-000000", 3).part
    committed.commit(["00000-000000"], FINGERPRINT)
    interrupted = ObjectOutput(f"{s3}/preds")
    interrupted.prepare(FINGERPRINT, PLAN, False, [])
    interrupted_part = uploaded(interrupted.staging, "00000-000000", 4).part
    loc.write_bytes(interrupted.run_file, run_json)
    notes: list[str] = []
    output = ObjectOutput(f"{s3}/preds")
    assert output.prepare(FINGERPRINT, PLAN, False, notes) == (set(), PLAN)
    assert len(notes) == 1 and re.match(r"cannot read \S+/run\.json: .*: discarded the state of 1 "
                                        r"interrupted run\(s\)$", notes[0])
    assert names(f"{s3}/preds") == ["_augury-run/run.json", MANIFEST, *sorted([kept, interrupted_part])]
    part = uploaded(output.staging, "00000-000000", 5).part
    assert output.commit(["00000-000000"], FINGERPRINT) == 5
    assert names(f"{s3}/preds") == [MANIFEST, part]


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


def test_two_drivers_of_one_run_committing_one_after_the_other_leave_a_readable_dataset(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """B commits between A's manifest and A's cleanup. A's cleanup removed every part with the run's id
    that A had not chosen, though the manifest it read back was B's: B's choice went, both runs exited 0,
    and the dataset named a missing part. Now a run whose manifest was replaced removes no part."""
    a, b, part0, _, small = two_drivers_of_one_run(s3)
    write = a._write

    def then_b_commits(url: str, data: bytes) -> None:
        write(url, data)
        if url.endswith(MANIFEST):
            assert b.commit(["00000-000000", "00000-000001"], FINGERPRINT) == 7

    monkeypatch.setattr(a, "_write", then_b_commits)
    assert a.commit(["00000-000000", "00000-000001"], FINGERPRINT) == 7
    assert manifest_parts(f"{s3}/preds") == [part0, small.part]
    assert names(f"{s3}/preds") == sorted([MANIFEST, part0, small.part])  # (B's cleanup removed A's choice)


def test_two_drivers_of_one_run_a_cleanup_that_removes_the_others_new_choice_is_an_error(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commits after B has read its own manifest back, and B's cleanup removes A's choice (a part with
    B's own run id, which B did not check again): both exited 0 over a dataset naming a missing part."""
    a, b, _, large, _ = two_drivers_of_one_run(s3)
    check = b._manifest_is
    calls: list[bool | None] = []

    def then_a_commits(written: bytes, *rest: str) -> bool | None:
        ours = check(written, *rest)
        calls.append(ours)
        if len(calls) == 1:
            assert a.commit(["00000-000000", "00000-000001"], FINGERPRINT) == 7
        return ours

    monkeypatch.setattr(b, "_manifest_is", then_a_commits)
    with pytest.raises(BatchError, match=rf"1 part\(s\) the manifest of \S+ lists \({large.part}, \.\.\.\) "
                                         r"were removed by a run on the same dataset at the same time"):
        b.commit(["00000-000000", "00000-000001"], FINGERPRINT)
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
    committed.commit(["00000-000000"], FINGERPRINT)
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
            rows.append(a.commit(["00000-000000"], FINGERPRINT))
        return got

    monkeypatch.setattr(b, "_listed", then_a_commits)
    notes: list[str] = []
    b.prepare(FINGERPRINT, PLAN, False, notes)
    assert notes == ["discarded an interrupted run's 1 finished task(s); pass --resume to continue one"]
    if not rows:  # (B's prepare no longer reads the manifest: A commits after it)
        rows.append(a.commit(["00000-000000"], FINGERPRINT))
    assert rows == [3] and manifest_parts(f"{s3}/preds") == [part_a]
    monkeypatch.undo()
    part_b = uploaded(b.staging, "00000-000000", 5).part
    assert b.commit(["00000-000000"], FINGERPRINT) == 5
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
    assert resumed.commit(["00000-000000"], FINGERPRINT) == 4
    assert names(f"{s3}/preds") == [MANIFEST, part]


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


def a_commits_after_bs_read_back(a: ObjectOutput, b: ObjectOutput, monkeypatch: pytest.MonkeyPatch) -> None:
    check = b._manifest_is
    calls: list[bool | None] = []

    def then_a_commits(written: bytes, *rest: str) -> bool | None:
        ours = check(written, *rest)
        calls.append(ours)
        if len(calls) == 1:
            assert a.commit(["00000-000000"], FINGERPRINT) == 5
        return ours

    monkeypatch.setattr(b, "_manifest_is", then_a_commits)


def test_a_cleanup_that_cannot_read_the_manifest_again_cannot_tell_and_says_so(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the test above of a cleanup removing A's part, but B's second read of A's manifest fails (a
    failed request): B found nothing lost and exited 0, with a warning, over a dataset naming a missing
    part."""
    a, b, part_a = race_on_a_damaged_manifest(s3)
    a_commits_after_bs_read_back(a, b, monkeypatch)
    listed = b._listed
    reads: list[str] = []

    def fails_the_second_time(otherwise: str) -> set[str] | None:
        reads.append(otherwise)  # (the first: the commit's, of the manifest it replaces)
        return None if len(reads) == 2 else listed(otherwise)

    monkeypatch.setattr(b, "_listed", fails_the_second_time)
    with pytest.raises(BatchError, match=rf"cannot tell whether the 1 part\(s\) this run removed from \S+ "
                                         rf"after its commit \({part_a}, \.\.\.\) include one the dataset's "
                                         r"manifest lists now; run again, one at a time"):
        b.commit(["00000-000000"], FINGERPRINT)
    assert len(reads) == 2


def test_a_cleanup_stopped_partway_still_checks_what_it_removed(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """B removes A's part, then fails to remove a stray that A's cleanup removed first: the failure was
    logged and the check of what B had removed skipped, so B exited 0 over a dataset naming a missing
    part."""
    loc.write_bytes(f"{s3}/preds/part-99999-999999.parquet", b"")  # (a stray, of no run: sorted last)
    a, b, part_a = race_on_a_damaged_manifest(s3)
    a_commits_after_bs_read_back(a, b, monkeypatch)
    with pytest.raises(BatchError, match=rf"1 part\(s\) the manifest of \S+ lists \({part_a}, \.\.\.\) were "
                                         r"removed by a run on the same dataset at the same time"):
        b.commit(["00000-000000"], FINGERPRINT)
    assert "part-99999-999999.parquet" not in names(f"{s3}/preds")


def test_a_commit_that_cannot_read_its_manifest_back_while_a_part_it_names_is_gone_says_so(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its part removed by another run after `commit` checked it, and its read-back fails: it cannot
    tell whether its manifest (naming the missing part) is the dataset's."""
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    part = uploaded(output.staging, "00000-000000", 3).part
    write = output._write

    def removed_first(url: str, data: bytes) -> None:
        if url.endswith(MANIFEST):
            fs, path = loc.filesystem(f"{s3}/preds/{part}")
            fs.delete_file(path)
        write(url, data)

    monkeypatch.setattr(output, "_write", removed_first)
    monkeypatch.setattr(output, "_manifest_is", lambda *args: None)  # (a failed request)
    with pytest.raises(BatchError, match=rf"cannot tell whether the manifest of \S+ this run wrote stands, "
                                         rf"and it names 1 part\(s\) that are gone \({part}, \.\.\.\)"):
        output.commit(["00000-000000"], FINGERPRINT)


def test_a_commit_that_cannot_list_its_parts_after_its_manifest_says_so(
        s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its part removed by another run after `commit` checked it, and the listing after the manifest
    fails (a failed request): the failure was logged as a cleanup's, and the run exited 0."""
    output = ObjectOutput(f"{s3}/preds")
    output.prepare(FINGERPRINT, PLAN, False, [])
    part = uploaded(output.staging, "00000-000000", 3).part
    write = output._write

    def removed_then_unlistable(url: str, data: bytes) -> None:
        if url.endswith(MANIFEST):
            fs, path = loc.filesystem(f"{s3}/preds/{part}")
            fs.delete_file(path)
        write(url, data)

        def fails(url: str, recursive: bool = True) -> list[pafs.FileInfo]:
            raise InputError(f"cannot list {url}: a failed request")

        monkeypatch.setattr(loc, "listing", fails)

    monkeypatch.setattr(output, "_write", removed_then_unlistable)
    with pytest.raises(BatchError, match=r"cannot tell whether every part the manifest of \S+ this run "
                                         r"wrote names is still there: cannot list \S+: a failed request"):
        output.commit(["00000-000000"], FINGERPRINT)
    monkeypatch.undo()
    with pytest.raises(InputError, match=rf"the part {part} its manifest lists is missing"):
        read_manifest(f"{s3}/preds")
