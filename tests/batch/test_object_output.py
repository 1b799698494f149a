"""`batch.object_output`: a dataset on an object store, committed by its manifest, against the session's
real S3 endpoint (moto's server: `conftest.s3_env`). The runs through `run_batch` are in
test_object_store.py; these pin the pieces' contracts: names, markers, run state, refusals (two runs on
one dataset at once: test_object_output_races.py)."""

from __future__ import annotations

import re

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from object_runs import FINGERPRINT, PLAN, manifest_parts, names, uploaded

from augury.batch import location as loc
from augury.batch.dataset import MANIFEST
from augury.batch.object_attempt import PartUpload, dataset_of, run_of, staging_of
from augury.batch.object_output import ObjectOutput
from augury.batch.sources import Plan
from augury.errors import BatchError, InputError


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
