"""Batch runs end to end on real files and tiny real models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch, staging_dir
from augury.errors import BatchError, InputError, SchemaError, TooManyBadRows
from augury.keys import feature_keys
from augury.models import load_model
from augury.schema import conform

INLINE = BatchOptions(workers=1, chunk_rows=256)


def test_scores_every_row_with_hash_keys(hgb_model: Path, features_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "preds.parquet"
    result = run_batch(str(hgb_model), features_parquet, out, INLINE)
    assert (result.rows, result.scored, result.failed) == (3000, 3000, 0)
    table = pq.read_table(out)
    assert table.column_names == ["key", "label", "proba_0", "proba_1", "model_version", "computed_at"]
    meta = orjson.loads(table.schema.metadata[b"augury"])
    assert meta["key_kind"] == "hash" and meta["model"]["version"] == result.model_version
    # same answer as the model called directly, and the keys are the canonical feature hash
    source = pq.read_table(features_parquet)
    X = np.column_stack([source.column(f"f{i}").to_numpy() for i in range(4)])
    clf = joblib.load(hgb_model)
    np.testing.assert_array_equal(table.column("label").to_numpy(), clf.predict(X))
    np.testing.assert_array_equal(table.column("proba_1").to_numpy(), clf.predict_proba(X)[:, 1])
    model = load_model(str(hgb_model))
    expected_keys = feature_keys(conform(source, model.info.inputs).batch, model.info.inputs)
    assert table.column("key").to_pylist() == expected_keys.to_pylist()
    assert not staging_dir(out).exists()


def test_the_compiled_evaluator_writes_the_same_file(hgb_model: Path, features_parquet: Path,
                                                    tmp_path: Path) -> None:
    plain, fast = tmp_path / "plain.parquet", tmp_path / "fast.parquet"
    library = run_batch(str(hgb_model), features_parquet, plain, BatchOptions(workers=2, evaluator="library"))
    auto = run_batch(str(hgb_model), features_parquet, fast, BatchOptions(workers=2))
    assert (library.evaluator, auto.evaluator) == ("sklearn", "hgb-compiled")
    drop = ["computed_at"]
    assert pq.read_table(plain).drop(drop).equals(pq.read_table(fast).drop(drop))
    for path, evaluator in ((plain, "sklearn"), (fast, "hgb-compiled")):
        assert orjson.loads(pq.read_schema(path).metadata[b"augury"])["model"]["evaluator"] == evaluator


@pytest.mark.parametrize("engine", ["processes", "threads"])
def test_key_column_and_workers_give_the_same_answer(
    hgb_model: Path, features_parquet: Path, tmp_path: Path, engine: str
) -> None:
    one = run_batch(
        str(hgb_model),
        features_parquet,
        tmp_path / "one.parquet",
        BatchOptions(key_columns=("id",), workers=1, chunk_rows=300),
    )
    two = run_batch(
        str(hgb_model),
        features_parquet,
        tmp_path / "two.parquet",
        BatchOptions(key_columns=("id",), workers=2, chunk_rows=128, engine=engine),
    )
    assert one.rows == two.rows == 3000
    a = pq.read_table(tmp_path / "one.parquet").drop_columns(["computed_at"])
    b = pq.read_table(tmp_path / "two.parquet").drop_columns(["computed_at"])
    assert a.column("id").to_pylist() == list(range(3000))
    assert a.equals(b)


def test_with_key_columns_each_row_has_its_features_key(hgb_model: Path, features_parquet: Path,
                                                         tmp_path: Path) -> None:
    """With --key, the output has `features_key` beside the key: the canonical hash of the row's features,
    the key the row would have had without key columns (a server compares it with a request's features)."""
    out = tmp_path / "preds.parquet"
    run_batch(str(hgb_model), features_parquet, out,
              BatchOptions(key_columns=("id",), workers=1, chunk_rows=700))
    table = pq.read_table(out)
    assert table.column_names == ["id", "features_key", "label", "proba_0", "proba_1", "model_version",
                                  "computed_at"]
    source = pq.read_table(features_parquet)
    inputs = load_model(str(hgb_model)).info.inputs
    expected = dict(zip(source.column("id").to_pylist(),
                        feature_keys(conform(source, inputs).batch, inputs).to_pylist(), strict=True))
    got = dict(zip(table.column("id").to_pylist(), table.column("features_key").to_pylist(), strict=True))
    assert got == expected
    hashed = tmp_path / "hashed.parquet"
    run_batch(str(hgb_model), features_parquet, hashed, INLINE)  # without key columns, the key is the hash
    assert "features_key" not in pq.read_table(hashed).column_names


def test_a_key_column_called_features_key_is_refused(hgb_model: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"features_key": ["a"], **{f"f{i}": [0.5] for i in range(4)}}), src)
    with pytest.raises(InputError, match="features_key clash"):
        run_batch(str(hgb_model), src, tmp_path / "out.parquet",
                  BatchOptions(key_columns=("features_key",), workers=1))


def test_csv_with_bad_rows_reports_them(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\nabc,3\n4,\n5,6,7\n8,9\n")
    out = tmp_path / "out.parquet"
    result = run_batch("fixture_models:add", src, out, BatchOptions(workers=1, max_error_rate=1.0))
    assert (result.rows, result.scored, result.failed) == (5, 2, 3)
    assert pq.read_table(out).column("value").to_pylist() == [3.0, 17.0]
    assert result.errors_path is not None
    reasons = [orjson.loads(line)["reason"] for line in result.errors_path.read_text().splitlines()]
    assert any("cannot read 'abc' as float64" in r for r in reasons)
    assert any("feature 'b' is missing" in r for r in reasons)
    assert any("expected 2 fields, got 3" in r for r in reasons)


def test_a_row_that_does_not_fit_the_schema_is_reported_with_its_key(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("patient_id,a,b\np1,1,2\np2,abc,3\n,x,1\np4,5,\n")
    out = tmp_path / "out.parquet"
    options = BatchOptions(workers=1, max_error_rate=1.0, key_columns=("patient_id",))
    result = run_batch("fixture_models:add", src, out, options)
    assert result.errors_path is not None
    errors = [orjson.loads(line) for line in result.errors_path.read_text().splitlines()]
    assert {e["row"]: e["key"] for e in errors} == {1: "p2", 2: None, 3: "p4"}  # row 2 has no id


def test_jsonl_with_bad_lines_and_model_refusals(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1, "b": 2}\nnot json\n{"a": "x", "b": 1}\n{"a": 5000, "b": 1}\n{"a": 2, "b": 2}\n')
    out = tmp_path / "out.parquet"
    result = run_batch("fixture_models:picky_add", src, out, BatchOptions(workers=1, max_error_rate=1.0))
    assert (result.rows, result.scored, result.failed) == (5, 2, 3)
    assert result.errors_path is not None
    errors = [orjson.loads(line) for line in result.errors_path.read_text().splitlines()]
    assert any("invalid JSON" in e["reason"] for e in errors)
    assert any("a must be at most 1000" in e["reason"] and e["row"] == 2 for e in errors)


def test_too_many_bad_rows_fails_and_keeps_the_old_output(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\nx,3\ny,4\n")
    out = tmp_path / "out.parquet"
    out.write_bytes(b"previous good output")
    with pytest.raises(TooManyBadRows, match="2 of 3 rows"):
        run_batch("fixture_models:add", src, out, BatchOptions(workers=1))
    assert out.read_bytes() == b"previous good output"
    # accepting them is a resume with a higher threshold: nothing is scored twice
    result = run_batch(
        "fixture_models:add", src, out, BatchOptions(workers=1, resume=True, max_error_rate=1.0)
    )
    assert (result.scored, result.failed, result.resumed_tasks) == (1, 2, 1)


def test_directory_input_and_resume_after_partial_run(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        pq.write_table(
            pa.table({"a": np.arange(100.0) + 100 * i, "b": np.ones(100)}),
            folder / f"{i}.parquet",
            row_group_size=25,
        )
    out = tmp_path / "out.parquet"
    result = run_batch("fixture_models:add", folder, out, BatchOptions(workers=1))
    assert result.tasks == 12 and result.rows == 300
    values = pq.read_table(out).column("value").to_numpy()
    np.testing.assert_array_equal(values, np.arange(300.0) + 1)


def test_resume_refuses_a_changed_input(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [1.0, 1.0]}), src)
    out = tmp_path / "out.parquet"
    staging = staging_dir(out)
    staging.mkdir()
    (staging / "run.json").write_bytes(b'{"input": [], "format": 1}')
    with pytest.raises(BatchError, match="cannot resume: the input"):
        run_batch("fixture_models:add", src, out, BatchOptions(workers=1, resume=True))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"x,y\n1,2\n", "lacks column\\(s\\) a, b"),
    ],
)
def test_bad_csv_inputs(tmp_path: Path, content: bytes, message: str) -> None:
    src = tmp_path / "in.csv"
    src.write_bytes(content)
    with pytest.raises(InputError, match=message):
        run_batch("fixture_models:add", src, tmp_path / "out.parquet", INLINE)


def test_bad_parquet_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.float64()), "b": pa.array([], pa.float64())}), empty)
    with pytest.raises(InputError, match="no rows"):
        run_batch("fixture_models:add", empty, tmp_path / "out.parquet", INLINE)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"cannot read .* as Parquet"):
        run_batch("fixture_models:add", junk, tmp_path / "out.parquet", INLINE)
    with pytest.raises(InputError, match="does not exist"):
        run_batch("fixture_models:add", tmp_path / "nope.parquet", tmp_path / "out.parquet", INLINE)
    odd = tmp_path / "in.xlsx"
    odd.write_bytes(b"x")
    with pytest.raises(InputError, match="must be Parquet"):
        run_batch("fixture_models:add", odd, tmp_path / "out.parquet", INLINE)


def test_missing_key_column_is_a_schema_error(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": [1.0], "b": [1.0]}), src)
    with pytest.raises((InputError, SchemaError), match="lacks column\\(s\\) id"):
        run_batch(
            "fixture_models:add", src, tmp_path / "out.parquet", BatchOptions(workers=1, key_columns=("id",))
        )


def _lock_file(out: Path) -> Path:
    return out.with_name(f".{out.name}.augury-lock")


def test_the_output_lock_is_removed_when_a_run_ends(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\n")
    out = tmp_path / "out.parquet"
    _lock_file(out).write_bytes(b"")  # left, unlocked, by a run that was killed: taken over
    run_batch("fixture_models:add", src, out, BatchOptions(workers=1))
    assert out.exists() and not _lock_file(out).exists()
    src.write_text("a,b\nx,2\n")
    with pytest.raises(TooManyBadRows):
        run_batch("fixture_models:add", src, out, BatchOptions(workers=1))
    assert not _lock_file(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [".out.parquet.augury-run"]


def test_a_second_run_on_one_output_is_refused_and_leaves_the_first_runs_lock(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\n")
    out = tmp_path / "out.parquet"
    hold = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()")
    holder = subprocess.Popen(  # another process holding the lock, as a running batch does
        [sys.executable, "-c", hold, str(_lock_file(out))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(BatchError, match="another augury batch run is writing"):
            run_batch("fixture_models:add", src, out, BatchOptions(workers=1))
        assert _lock_file(out).exists() and not out.exists()
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()
    run_batch("fixture_models:add", src, out, BatchOptions(workers=1))
    assert out.exists() and not _lock_file(out).exists()
