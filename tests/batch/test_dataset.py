"""Prediction datasets (`-o preds/`): parts written by the workers, a manifest last, read by verify and
publish through the one opener, and an incomplete dataset refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch, staging_dir
from augury.batch.dataset import MANIFEST, read_manifest
from augury.errors import InputError
from augury.publish import publish_predictions
from augury.store import SQLiteStore
from augury.verify import Checks, verify
from augury.verify.source import PredictionsFile

FIXTURES = Path(__file__).parent.parent / "fixtures"


def read_all(path: Path) -> pa.Table:
    with PredictionsFile(path) as f:
        return pa.Table.from_batches(list(f.batches(f.schema.names)), schema=f.schema)


@pytest.mark.parametrize("engine", ["processes", "threads", "inline"])
def test_a_dataset_holds_what_the_file_holds(hgb_model: Path, features_parquet: Path, tmp_path: Path,
                                             engine: str) -> None:
    options = BatchOptions(key_columns=("id",), workers=2, chunk_rows=128, engine=engine)
    one = run_batch(str(hgb_model), features_parquet, tmp_path / "one.parquet", options)
    many = run_batch(str(hgb_model), features_parquet, f"{tmp_path / 'preds'}/", options)
    assert many.output == tmp_path / "preds" and many.rows == many.scored == one.rows == 3000
    folder = tmp_path / "preds"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [MANIFEST, *sorted(f"part-00000-{rg:06d}.parquet" for rg in range(6))]
    manifest = orjson.loads((folder / MANIFEST).read_bytes())
    assert manifest["rows"] == 3000 and [p["rows"] for p in manifest["parts"]] == [500] * 6
    assert manifest["fingerprint"]["model_version"] == many.model_version
    assert [c["name"] for c in manifest["columns"]][:2] == ["id", "features_key"]
    drop = ["computed_at"]
    assert read_all(folder).drop(drop).equals(pq.read_table(tmp_path / "one.parquet").drop(drop))
    assert not staging_dir(folder).exists()


def test_verify_and_publish_read_a_dataset(hgb_model: Path, features_parquet: Path, tmp_path: Path) -> None:
    folder = tmp_path / "preds"
    run_batch(str(hgb_model), features_parquet, folder, BatchOptions(key_columns=("id",), workers=2))
    report = verify(folder, Checks())
    assert report.passed and report.profile.row_count == 3000
    store = SQLiteStore(tmp_path / "s.db")
    try:
        result = publish_predictions(folder, store, Checks())
        assert result.version.row_count == 3000
        got = store.get_many(["0", "2999"])
        assert all(g is not None for g in got)
    finally:
        store.close()


def test_a_second_run_replaces_a_dataset_and_never_a_folder_of_other_files(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0], "b": [1.0, 1.0]}), src)
    folder = tmp_path / "preds"
    for _ in range(2):
        assert run_batch("fixture_models:add", src, folder, BatchOptions(workers=1)).rows == 2
    assert read_all(folder).num_rows == 2
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a prediction dataset"):
        run_batch("fixture_models:add", src, other, BatchOptions(workers=1))
    assert (other / "notes.txt").read_text() == "keep me"


def augury(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(FIXTURES)}
    return subprocess.run([sys.executable, "-m", "augury.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_an_incomplete_dataset_is_refused_in_one_line(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["x", "y"], "a": [1.0, 2.0], "b": [1.0, 1.0]}), src)
    folder = tmp_path / "preds"
    proc = augury("batch", "fixture_models:add", str(src), "-o", f"{folder}/", "--key", "id",
                  "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    store = f"sqlite:///{tmp_path / 's.db'}"
    (folder / MANIFEST).unlink()
    for args in (["publish", str(folder), "--store", store], ["verify", str(folder)]):
        proc = augury(*args)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "incomplete prediction dataset" in lines[0], proc.stderr
    assert not (tmp_path / "s.db").exists()  # refused before a store was created


@pytest.mark.parametrize("text", [b"null", b"[]", b'"a manifest"', b"3"])
def test_a_manifest_that_is_json_but_not_an_object_is_one_input_error(tmp_path: Path, text: bytes) -> None:
    folder = tmp_path / "preds"
    folder.mkdir()
    pq.write_table(pa.table({"value": [1.0]}), folder / "part-00000-000000.parquet")
    (folder / MANIFEST).write_bytes(text)
    with pytest.raises(InputError, match=r"_manifest\.json is not a readable prediction dataset manifest: it "
                                         r"holds \w+, not an object"):
        read_manifest(folder)
