"""scikit-learn and sklearn-API models from joblib, pickle and skops files."""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, RandomForestRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC

from augury.errors import ConfigError, ModelLoadError
from augury.models import load_model, predict_checked
from augury.schema import Field, Schema

Same = Callable[..., pa.RecordBatch]


def _dump(obj: Any, path: Path) -> Path:
    joblib.dump(obj, path)
    return path


@pytest.fixture(scope="module")
def logreg(data: Any, model_dir: Path) -> tuple[LogisticRegression, Path]:
    est = LogisticRegression(max_iter=1000).fit(data.x, data.y_bin)
    return est, _dump(est, model_dir / "logreg.joblib")


def test_binary_classifier_schema_and_values(logreg: Any, data: Any, same_answer: Same) -> None:
    est, path = logreg
    model = load_model(path)
    info = model.info
    assert (info.name, info.format, info.source) == ("logreg", "sklearn", str(path))
    assert info.evaluator == "sklearn"
    assert info.task == "classification"
    assert info.classes == (0, 1)
    assert info.inputs == Schema.of([(f"f{i}", "float64") for i in range(4)])
    assert not any(f.allow_missing for f in info.inputs.fields)
    assert info.outputs == Schema((Field("label", "int64"), Field("proba_0", "float64"),
                                   Field("proba_1", "float64")))
    out = same_answer(model, data.batch(), exact=False)
    assert out.column("label").to_pylist() == est.predict(data.x).tolist()
    np.testing.assert_allclose(out.column("proba_1").to_numpy(), est.predict_proba(data.x)[:, 1], rtol=1e-12)


def test_empty_batch_gives_empty_output(logreg: Any, data: Any) -> None:
    out = predict_checked(load_model(logreg[1]), data.batch().slice(0, 0))
    assert out.num_rows == 0 and out.schema.names == ["label", "proba_0", "proba_1"]


def test_pickle_suffixes_load(logreg: Any, tmp_path: Path) -> None:
    for suffix in (".pkl", ".pickle"):
        model = load_model(_dump(logreg[0], tmp_path / f"m{suffix}"))
        assert model.info.format == "sklearn"


def test_string_classes_forest_exact(data: Any, model_dir: Path, same_answer: Same) -> None:
    est = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(data.x, data.y_str)
    model = load_model(_dump(est, model_dir / "forest.joblib"))
    assert model.info.classes == ("high", "low", "mid")
    assert model.info.outputs.names == ["label", "proba_high", "proba_low", "proba_mid"]
    assert model.info.outputs["label"].dtype == "string"
    out = same_answer(model, data.batch(), exact=True)
    assert out.column("label").to_pylist() == est.predict(data.x).tolist()


def test_bool_classes(data: Any, tmp_path: Path) -> None:
    est = LogisticRegression(max_iter=1000).fit(data.x, data.y_bin.astype(bool))
    model = load_model(_dump(est, tmp_path / "b.joblib"))
    assert model.info.outputs.names == ["label", "proba_False", "proba_True"]
    out = predict_checked(model, data.batch())
    assert out.column("label").type == pa.bool_()
    assert out.column("label").to_pylist() == est.predict(data.x).tolist()


def test_hist_gradient_boosting_accepts_nan(data: Any, model_dir: Path, same_answer: Same) -> None:
    est = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(data.x, data.y_multi)
    model = load_model(_dump(est, model_dir / "hgb.joblib"))
    assert all(f.allow_missing for f in model.info.inputs.fields)
    x = data.x.copy()
    x[::7, 1] = np.nan
    batch = pa.RecordBatch.from_arrays([pa.array(x[:, j]) for j in range(4)], names=model.info.inputs.names)
    out = same_answer(model, batch, exact=True)
    assert out.column("label").to_pylist() == est.predict(x).tolist()
    proba = np.column_stack([out.column(f"proba_{c}").to_numpy() for c in est.classes_])
    np.testing.assert_array_equal(proba, est.predict_proba(x))


def test_pipeline_nan_support_follows_the_steps(data: Any, tmp_path: Path) -> None:
    scaled = make_pipeline(StandardScaler(), LogisticRegression()).fit(data.x, data.y_bin)
    imputed = make_pipeline(SimpleImputer(), LogisticRegression()).fit(data.x, data.y_bin)
    scaled_inputs = load_model(_dump(scaled, tmp_path / "s.joblib")).info.inputs.fields
    imputed_inputs = load_model(_dump(imputed, tmp_path / "i.joblib")).info.inputs.fields
    assert not any(f.allow_missing for f in scaled_inputs)
    assert all(f.allow_missing for f in imputed_inputs)


def test_regressors(data: Any, model_dir: Path, same_answer: Same) -> None:
    linear = LinearRegression().fit(data.x, data.y_reg)
    model = load_model(_dump(linear, model_dir / "linear.joblib"))
    assert model.info.task == "regression" and model.info.outputs.names == ["value"]
    out = same_answer(model, data.batch(), exact=False)
    np.testing.assert_allclose(out.column("value").to_numpy(), linear.predict(data.x), rtol=1e-12)

    y2 = np.column_stack([data.y_reg, data.x[:, 1]])
    forest = RandomForestRegressor(n_estimators=5, max_depth=3, random_state=0).fit(data.x, y2)
    model = load_model(_dump(forest, model_dir / "forest_reg.joblib"))
    assert model.info.outputs.names == ["value_0", "value_1"]
    out = same_answer(model, data.batch(), exact=True)
    np.testing.assert_array_equal(out.column("value_1").to_numpy(), forest.predict(data.x)[:, 1])


def test_classifier_without_proba_gives_label_only(data: Any, tmp_path: Path, manifest: Any) -> None:
    path = _dump(LinearSVC().fit(data.x, data.y_multi), tmp_path / "svc.joblib")
    assert load_model(path).info.outputs.names == ["label"]
    manifest(path, 'outputs = "proba"\n')
    with pytest.raises(ConfigError, match="gives no probabilities"):
        load_model(path)


def test_manifest_outputs_label(logreg: Any, tmp_path: Path, manifest: Any, data: Any,
                                same_answer: Same) -> None:
    path = _dump(logreg[0], tmp_path / "lr.joblib")
    manifest(path, 'outputs = "label"\n')
    model = load_model(path)
    assert model.info.outputs.names == ["label"]
    same_answer(model, data.batch(), exact=True)


def _frame(data: Any) -> pd.DataFrame:
    return pd.DataFrame({"review": data.texts, "stars": data.x[:, 0]})


@pytest.fixture(scope="module")
def text_table(data: Any) -> pa.RecordBatch:
    columns = [pa.array(data.texts), pa.array(data.x[:, 0])]
    return pa.RecordBatch.from_arrays(columns, names=["review", "stars"])


def _column_pipeline(data: Any) -> Any:
    columns = ColumnTransformer([("text", TfidfVectorizer(), "review"), ("num", StandardScaler(), ["stars"])])
    return make_pipeline(columns, LogisticRegression(max_iter=1000)).fit(_frame(data), data.y_str)


def test_column_transformer_text_pipeline_with_manifest(data: Any, tmp_path: Path, manifest: Any,
                                                        text_table: pa.RecordBatch,
                                                        same_answer: Same) -> None:
    est = _column_pipeline(data)
    path = _dump(est, tmp_path / "reviews.joblib")
    manifest(path, '[[inputs]]\nname = "stars"\ndtype = "float"\n\n'
                   '[[inputs]]\nname = "review"\ndtype = "str"\n')
    model = load_model(path)
    assert model.info.inputs == Schema.of([("stars", "float64"), ("review", "string")])
    out = same_answer(model, text_table, exact=False)
    assert out.column("label").to_pylist() == est.predict(_frame(data)).tolist()
    np.testing.assert_allclose(out.column("proba_high").to_numpy(), est.predict_proba(_frame(data))[:, 0],
                               rtol=1e-12)


def test_column_transformer_text_column_inferred(data: Any, tmp_path: Path,
                                                 text_table: pa.RecordBatch) -> None:
    model = load_model(_dump(_column_pipeline(data), tmp_path / "reviews.joblib"))
    assert model.info.inputs == Schema.of([("review", "string"), ("stars", "float64")])
    assert predict_checked(model, text_table).num_rows == len(data.texts)


def test_manifest_must_name_the_frame_columns(data: Any, tmp_path: Path, manifest: Any) -> None:
    path = _dump(_column_pipeline(data), tmp_path / "reviews.joblib")
    manifest(path, '[[inputs]]\nname = "text"\ndtype = "string"\n')
    with pytest.raises(ConfigError, match="review, stars"):
        load_model(path)


def test_tfidf_pipeline_on_one_string_feature(data: Any, model_dir: Path, manifest: Any,
                                              same_answer: Same) -> None:
    est = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000)).fit(data.texts, data.y_bin)
    path = _dump(est, model_dir / "tfidf.joblib")
    assert load_model(path).info.inputs == Schema.of([("text", "string")])
    manifest(path, '[[inputs]]\nname = "review"\ndtype = "string"\n')
    model = load_model(path)
    assert model.info.inputs.names == ["review"]
    batch = pa.RecordBatch.from_arrays([pa.array(data.texts)], names=["review"])
    out = same_answer(model, batch, exact=False)
    assert out.column("label").to_pylist() == est.predict(data.texts).tolist()


def test_skops_loads_trusted_types(logreg: Any, data: Any, tmp_path: Path, same_answer: Same) -> None:
    sio.dump(logreg[0], tmp_path / "lr.skops")
    model = load_model(tmp_path / "lr.skops")
    assert model.info.format == "skops" and model.info.classes == (0, 1)
    same_answer(model, data.batch(), exact=False)


def test_skops_refuses_untrusted_types_unless_trusted(data: Any, tmp_path: Path) -> None:
    est = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression()).fit(data.x, data.y_bin)
    sio.dump(est, tmp_path / "neg.skops")
    with pytest.raises(ModelLoadError, match=r"neg\.skops.*_operator\.neg.*trust_skops=True"):
        load_model(tmp_path / "neg.skops")
    model = load_model(tmp_path / "neg.skops", trust_skops=True)
    assert predict_checked(model, data.batch()).column("label").to_pylist() == est.predict(data.x).tolist()


def test_skops_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "bad.skops").write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match=r"bad\.skops is not a readable skops file"):
        load_model(tmp_path / "bad.skops")


def test_pickled_xgboost_and_lightgbm_estimators(data: Any, tmp_path: Path, same_answer: Same) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    for est in (xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1),
                lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1, n_jobs=1)):
        est.fit(data.x, data.y_multi)
        model = load_model(_dump(est, tmp_path / f"{type(est).__name__}.joblib"))
        assert model.info.classes == (0, 1, 2)
        assert model.info.evaluator == type(est).__module__.split(".")[0]  # "xgboost", "lightgbm"
        assert all(f.allow_missing for f in model.info.inputs.fields)
        out = same_answer(model, data.batch(), exact=True)
        assert out.column("label").to_pylist() == np.asarray(est.predict(data.x)).tolist()
