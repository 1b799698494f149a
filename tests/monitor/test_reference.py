"""Reference profiles: publish keeps the profile of the inputs it scored beside its predictions'; a server
with a model takes its reference from data it is given (or its manifest names), scored by the model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from augury.batch import BatchOptions, run_batch
from augury.errors import InputError
from augury.models import load_model
from augury.monitor.reference import Reference, reference_for
from augury.publish import publish_predictions
from augury.store import SQLiteStore
from augury.verify import Checks
from augury.verify.inputs import INPUT_PROFILE_META
from augury.verify.profile import CategoricalProfile, NumericProfile


def test_publish_with_inputs_keeps_their_profile(tmp_path: Path, hgb_model: Path,
                                                 features_parquet: Path) -> None:
    preds = tmp_path / "preds.parquet"
    run_batch(str(hgb_model), str(features_parquet), preds, BatchOptions(key_columns=("id",), workers=1))
    store = SQLiteStore(tmp_path / "s.db")
    try:
        version = publish_predictions(preds, store, Checks(), inputs=features_parquet).version
        assert store.active() is not None
        reference = Reference.from_version(store.active())  # type: ignore[arg-type]
    finally:
        store.close()
    assert version.meta[INPUT_PROFILE_META]["row_count"] == 3000
    assert reference.inputs is not None and set(reference.inputs.columns) == {"f0", "f1", "f2", "f3"}
    f0 = reference.inputs.columns["f0"]
    assert isinstance(f0, NumericProfile) and len(f0.edges) == 9 and f0.count == 3000  # deciles
    assert reference.predictions is not None and "label" in reference.predictions.columns


def test_publish_without_inputs_profiles_what_the_batch_run_scored_while_it_is_unchanged(
        tmp_path: Path, hgb_model: Path, features_parquet: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The batch run records the files it scored (path, size, modification time); publish profiles them
    itself, the same profile as --inputs gives, and stores none once the file has changed."""
    data = tmp_path / "scored.parquet"
    shutil.copy(features_parquet, data)
    preds = tmp_path / "preds.parquet"
    run_batch(str(hgb_model), str(data), preds, BatchOptions(key_columns=("id",), workers=1))
    store = SQLiteStore(tmp_path / "s.db")
    try:
        given = publish_predictions(preds, store, Checks(), inputs=data).version
        recorded = publish_predictions(preds, store, Checks()).version
        data.write_bytes(data.read_bytes())  # the same bytes, rewritten: another file as far as anyone knows
        os.utime(data, ns=(1, 1))
        with caplog.at_level("WARNING", logger="augury.publish"):
            changed = publish_predictions(preds, store, Checks()).version
    finally:
        store.close()
    assert recorded.meta[INPUT_PROFILE_META] == given.meta[INPUT_PROFILE_META]
    assert INPUT_PROFILE_META not in changed.meta
    assert "has changed since the run" in caplog.text and "--inputs" in caplog.text


def test_publish_refuses_inputs_without_the_features_before_touching_the_store(
        tmp_path: Path, hgb_model: Path, features_parquet: Path) -> None:
    preds = tmp_path / "preds.parquet"
    run_batch(str(hgb_model), str(features_parquet), preds, BatchOptions(key_columns=("id",), workers=1))
    other = tmp_path / "other.csv"
    other.write_text("f0,f1\n1,2\n")
    store = SQLiteStore(tmp_path / "s.db")
    try:
        with pytest.raises(InputError, match=r"missing feature column.*f2"):
            publish_predictions(preds, store, Checks(), inputs=other)
        assert store.active() is None and store.versions() == []
    finally:
        store.close()


def test_a_server_reference_from_data_or_the_manifest(tmp_path: Path, hgb_model: Path,
                                                      features_parquet: Path) -> None:
    model = load_model(hgb_model)
    given = reference_for(model, str(features_parquet), None)
    assert given is not None and given.inputs is not None and given.predictions is not None
    assert given.inputs.row_count == 3000 and given.predictions.row_count == 3000
    label = given.predictions.columns["label"]
    assert isinstance(label, CategoricalProfile) and abs(sum(label.shares.values()) - 1) < 1e-9
    assert reference_for(model, None, None) is None  # nothing names one
    folder = tmp_path / "m"
    folder.mkdir()
    shutil.copy(hgb_model, folder / "hgb.joblib")
    shutil.copy(features_parquet, folder / "valid.parquet")
    (folder / "hgb.augury.toml").write_text('reference = "valid.parquet"\n')
    named = reference_for(load_model(folder / "hgb.joblib"), None, None)
    assert named is not None and named.inputs == given.inputs and named.source.endswith("valid.parquet")
    with pytest.raises(InputError, match="needs a model"):
        reference_for(None, str(features_parquet), None)
