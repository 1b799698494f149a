"""Fixtures for the serving tests: real SQLite stores, the suite's real models, an HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from augury.models import Model, load_model
from augury.store import SQLiteStore

from .helpers import review_rows


@pytest.fixture()
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "preds.db")
    yield store
    store.close()


@pytest.fixture(scope="session")
def hgb(hgb_model: Path) -> Model:
    """The suite's HistGradientBoostingClassifier on f0..f3 (label, proba_0, proba_1), loaded."""
    return load_model(hgb_model, threads=1)


@pytest.fixture()
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def text_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scikit-learn pipeline fitted on a DataFrame: TF-IDF on the text `review` and scaled `stars`, then
    logistic regression over three string classes; its manifest declares `review` a string."""
    import joblib
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = review_rows(300, seed=3)
    frame = pd.DataFrame(rows)
    y = np.where(frame["stars"] > 3.5, "high", np.where(frame["stars"] > 1.5, "mid", "low"))
    columns = ColumnTransformer([("text", TfidfVectorizer(), "review"), ("num", StandardScaler(), ["stars"])])
    est = make_pipeline(columns, LogisticRegression(max_iter=1000)).fit(frame, y)
    path = tmp_path_factory.mktemp("text") / "reviews.joblib"
    joblib.dump(est, path)
    path.with_name("reviews.augury.toml").write_text(
        'name = "reviews"\nversion = "r1"\n\n[[inputs]]\nname = "review"\ndtype = "string"\n\n'
        '[[inputs]]\nname = "stars"\ndtype = "float64"\n')
    return path


@pytest.fixture(scope="session")
def text_model(text_pipeline: Path) -> Model:
    return load_model(text_pipeline, threads=1)
