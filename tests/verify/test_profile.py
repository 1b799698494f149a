"""Profiles: exact counts and moments, decile bins, category shares, and a JSON round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.errors import InputError
from augury.verify import CategoricalProfile, NumericProfile, Profile, profile_predictions
from augury.verify.profile import MAX_CATEGORIES, SAMPLE_VALUES

from .helpers import classifier_file, classifier_info, write_predictions


def test_numeric_and_categorical_summaries(tmp_path: Path) -> None:
    values = [1.0, 2.0, math.nan, math.inf, -math.inf, None, 3.0, 6.0]
    path = write_predictions(tmp_path / "p.parquet", {
        "id": list(range(8)), "value": pa.array(values, type=pa.float64()),
        "kind": ["a", "b", "a", None, "a", "b", "a", "a"]}, None)
    profile = profile_predictions(path)
    assert profile.row_count == 8
    value = profile.columns["value"]
    assert isinstance(value, NumericProfile)
    assert (value.count, value.nan, value.posinf, value.neginf, value.null) == (4, 1, 1, 1, 1)
    assert (value.min, value.max, value.mean) == (1.0, 6.0, 3.0)
    assert len(value.fractions) == len(value.edges) + 1
    assert sum(value.fractions) == pytest.approx(1.0)
    kind = profile.columns["kind"]
    assert isinstance(kind, CategoricalProfile)
    assert (kind.count, kind.null) == (7, 1)
    assert kind.shares == {"a": pytest.approx(5 / 7), "b": pytest.approx(2 / 7)}


def test_label_is_categorical_and_probabilities_numeric(tmp_path: Path) -> None:
    profile = profile_predictions(classifier_file(tmp_path / "p.parquet", n=2000))
    assert set(profile.columns) == {"label", "proba_no", "proba_yes"}
    assert isinstance(profile.columns["label"], CategoricalProfile)
    proba = profile.columns["proba_yes"]
    assert isinstance(proba, NumericProfile)
    assert len(proba.edges) == 9
    assert all(f == pytest.approx(0.1, abs=0.002) for f in proba.fractions)


def test_a_file_and_the_same_table_give_the_same_profile(tmp_path: Path) -> None:
    path = classifier_file(tmp_path / "p.parquet", n=3000)
    assert profile_predictions(pq.read_table(path)) == profile_predictions(path)


def test_outputs_can_be_chosen(tmp_path: Path) -> None:
    path = classifier_file(tmp_path / "p.parquet", n=100)
    assert set(profile_predictions(path, outputs=["proba_yes"]).columns) == {"proba_yes"}


def test_bins_beyond_the_sample_size_are_close_estimates() -> None:
    n = SAMPLE_VALUES * 3
    x = np.random.default_rng(1).random(n)
    table = pa.table({"value": x, "model_version": ["v"] * n})
    profile = profile_predictions(table)
    value = profile.columns["value"]
    assert isinstance(value, NumericProfile)
    assert value.count == n and value.min == x.min() and value.max == x.max()
    assert value.mean == pytest.approx(x.mean())
    deciles = np.quantile(x, np.arange(1, 10) / 10)
    assert np.allclose(value.edges, deciles, atol=0.01)
    assert all(f == pytest.approx(0.1, abs=0.005) for f in value.fractions)


def test_too_many_categories_are_truncated() -> None:
    names = [f"c{i}" for i in range(MAX_CATEGORIES + 1)]
    profile = profile_predictions(pa.table({"name": names}))
    name = profile.columns["name"]
    assert isinstance(name, CategoricalProfile)
    assert name.truncated and name.shares == {} and name.count == len(names)


def test_round_trip_through_json(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "p.parquet", {
        "id": [1, 2, 3], "label": ["no", "yes", "yes"], "proba_no": [0.9, 0.2, math.nan],
        "proba_yes": [0.1, 0.8, math.inf]}, classifier_info())
    profile = profile_predictions(path)
    text = json.dumps(profile.to_dict(), allow_nan=False)
    assert Profile.from_dict(json.loads(text)) == profile


def test_an_empty_profile() -> None:
    profile = profile_predictions(pa.table({"value": pa.array([], type=pa.float64())}))
    assert profile.row_count == 0
    assert profile.columns["value"] == NumericProfile(0)
    assert Profile.from_dict(profile.to_dict()) == profile


@pytest.mark.parametrize("bad", [
    {"format": 99, "row_count": 1, "columns": {}},
    {"format": 1, "columns": {}},
    {"format": 1, "row_count": 1, "columns": {"v": {"kind": "tensor"}}},
    {"format": 1, "row_count": 1, "columns": {"v": {"kind": "numeric", "count": 1}}},
    {"format": 1, "row_count": 1, "columns": {"v": {
        "kind": "numeric", "count": 1, "nan": 0, "posinf": 0, "neginf": 0, "null": 0, "min": 0, "max": 1,
        "mean": 0.5, "edges": [0.5], "fractions": [1.0]}}},
])
def test_a_malformed_profile_is_an_input_error(bad: dict[str, object]) -> None:
    with pytest.raises(InputError):
        Profile.from_dict(bad)


def test_an_unknown_output_to_profile(tmp_path: Path) -> None:
    path = classifier_file(tmp_path / "p.parquet", n=10)
    with pytest.raises(InputError, match="no column"):
        profile_predictions(path, outputs=["proba_maybe"])
    with pytest.raises(InputError, match="no column"):
        profile_predictions(pq.read_table(path), outputs=["proba_maybe"])
