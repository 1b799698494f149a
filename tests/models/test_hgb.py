"""HistGradientBoosting models scored by the compiled kernel: equal to scikit-learn's answers to the bit."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression

from augury.errors import ConfigError, ModelLoadError
from augury.models import Model, hgb, load_model, predict_checked

pytest.importorskip("numba")

Same = Callable[..., pa.RecordBatch]
N = 1200
BATCH_SIZES = (1, 7, 64, 65, 1000)


@dataclass(frozen=True)
class Rows:
    """1,200 rows of 6 features, NaN in a few places (training and scoring), and targets of each kind."""

    x: np.ndarray
    y_bin: np.ndarray
    y_multi: np.ndarray
    y_ten: np.ndarray
    y_reg: np.ndarray
    y_count: np.ndarray

    def batch(self, x: np.ndarray | None = None) -> pa.RecordBatch:
        x = self.x if x is None else x
        return pa.RecordBatch.from_arrays([pa.array(x[:, j]) for j in range(x.shape[1])],
                                          names=[f"f{j}" for j in range(x.shape[1])])


@pytest.fixture(scope="module")
def rows() -> Rows:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(N, 6))
    score = x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] * x[:, 3] + rng.normal(scale=0.3, size=N)
    x[rng.random(x.shape) < 0.08] = np.nan
    x[::13, 4] = np.nan
    return Rows(x=x, y_bin=(score > 0).astype(np.int64), y_multi=np.digitize(score, [-0.5, 0.5]),
                y_ten=np.digitize(score, np.quantile(score, np.linspace(0.1, 0.9, 9))),
                y_reg=3.0 * score, y_count=rng.poisson(np.exp(0.5 * score)))


def _load(est: Any, path: Path) -> Model:
    joblib.dump(est, path)
    return load_model(path)


def _proba(out: pa.RecordBatch, classes: Any) -> np.ndarray:
    return np.column_stack([out.column(f"proba_{c}").to_numpy() for c in classes])


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype=np.float64).tobytes()


def _assert_classifier_exact(model: Model, est: Any, rows: Rows) -> None:
    out = predict_checked(model, rows.batch())
    assert out.column("label").to_pylist() == est.predict(rows.x).tolist()
    assert _bits(_proba(out, est.classes_)) == _bits(est.predict_proba(rows.x))
    for size in BATCH_SIZES:
        parts = [predict_checked(model, rows.batch().slice(s, size)) for s in range(0, len(rows.x), size)]
        assert pa.Table.from_batches(parts).equals(pa.Table.from_batches([out]))


def _assert_regressor_exact(model: Model, est: Any, rows: Rows) -> None:
    out = predict_checked(model, rows.batch())
    assert _bits(out.column("value").to_numpy()) == _bits(est.predict(rows.x))
    for size in BATCH_SIZES:
        parts = [predict_checked(model, rows.batch().slice(s, size)) for s in range(0, len(rows.x), size)]
        assert pa.Table.from_batches(parts).equals(pa.Table.from_batches([out]))


@pytest.mark.parametrize("target", ["y_bin", "y_multi", "y_ten"])  # y_ten: see HGBScorer.proba
def test_classifiers_bit_for_bit(rows: Rows, tmp_path: Path, target: str, same_answer: Same) -> None:
    est = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(rows.x, getattr(rows, target))
    model = _load(est, tmp_path / "clf.joblib")
    assert model.info.evaluator == "hgb-compiled"
    _assert_classifier_exact(model, est, rows)
    same_answer(model, rows.batch(), exact=True)


@pytest.mark.parametrize("loss", ["squared_error", "poisson", "gamma", "absolute_error"])
def test_regressors_bit_for_bit(rows: Rows, tmp_path: Path, loss: str, same_answer: Same) -> None:
    y = rows.y_count + 0.5 if loss in ("poisson", "gamma") else rows.y_reg
    est = HistGradientBoostingRegressor(loss=loss, max_iter=30, random_state=0).fit(rows.x, y)
    model = _load(est, tmp_path / "reg.joblib")
    assert model.info.evaluator == "hgb-compiled"
    _assert_regressor_exact(model, est, rows)
    same_answer(model, rows.batch(), exact=True)


def test_edge_values_score_like_sklearn(rows: Rows, tmp_path: Path) -> None:
    est = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(rows.x, rows.y_multi)
    model = _load(est, tmp_path / "clf.joblib")
    probe = hgb.probe_rows(est, 6)
    out = predict_checked(model, rows.batch(probe))
    assert out.column("label").to_pylist() == est.predict(probe).tolist()
    assert _bits(_proba(out, est.classes_)) == _bits(est.predict_proba(probe))


def test_probe_rows_reach_nan_extremes_and_thresholds(rows: Rows) -> None:
    est = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(rows.x, rows.y_reg)
    probe = hgb.probe_rows(est, 6)
    assert np.isnan(probe).any() and np.isinf(probe).any() and (probe == 5e-324).any()
    nodes = np.concatenate([p.nodes for it in est._predictors for p in it])
    inner = nodes[nodes["is_leaf"] == 0]
    for node in inner:
        assert (probe[:, node["feature_idx"]] == node["num_threshold"]).any()
    above = np.nextafter(inner["num_threshold"], np.inf)
    assert (probe[:, inner["feature_idx"]] == above).any()


def test_raw_scores_of_any_layout(rows: Rows) -> None:
    est = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows.x, rows.y_multi)
    scorer = hgb.exact_scorer(est, 6)
    assert scorer is not None and scorer.evaluator == "hgb-compiled"
    frozen = rows.x.copy()
    frozen.flags.writeable = False
    for x in (rows.x, np.asfortranarray(rows.x), rows.x[::3], rows.x[:, :], frozen):
        raw = scorer.raw(x)
        assert raw.flags.f_contiguous and _bits(raw) == _bits(est._raw_predict(x))
    assert scorer.raw(rows.x[:0]).shape == (0, 3)  # scikit-learn refuses no rows; the adapter never asks
    with pytest.raises(ValueError, match="6 features"):
        scorer.raw(rows.x[:, :5])


def test_leaf_only_trees(rows: Rows, tmp_path: Path) -> None:
    """A tree that cannot split is one leaf: walked in zero steps."""
    est = HistGradientBoostingRegressor(max_iter=3, min_samples_leaf=N, random_state=0)
    est.fit(rows.x, rows.y_reg)
    assert all(len(p.nodes) == 1 for it in est._predictors for p in it)
    model = _load(est, tmp_path / "stump.joblib")
    assert model.info.evaluator == "hgb-compiled"
    _assert_regressor_exact(model, est, rows)


def test_categorical_model_stays_with_sklearn(rows: Rows, tmp_path: Path) -> None:
    x = rows.x.copy()
    x[:, 0] = np.where(np.isnan(x[:, 0]), np.nan, np.floor(np.abs(x[:, 0]) * 2) % 5)
    est = HistGradientBoostingClassifier(max_iter=10, categorical_features=[0], random_state=0)
    est.fit(x, rows.y_bin)
    model = _load(est, tmp_path / "cat.joblib")
    assert model.info.evaluator == "sklearn"
    _assert_classifier_exact(model, est, dataclasses.replace(rows, x=x[:200]))  # sklearn is slow per call


def test_without_numba_sklearn_scores(rows: Rows, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hgb, "_kernel", lambda: None)
    clf = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows.x, rows.y_multi)
    reg = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(rows.x, rows.y_reg)
    clf_model, reg_model = _load(clf, tmp_path / "clf.joblib"), _load(reg, tmp_path / "reg.joblib")
    assert clf_model.info.evaluator == reg_model.info.evaluator == "sklearn"
    few = dataclasses.replace(rows, x=rows.x[:300])  # sklearn is slow per call
    _assert_classifier_exact(clf_model, clf, few)
    _assert_regressor_exact(reg_model, reg, few)


def test_a_model_fitted_on_a_dataframe_gets_the_compiled_scorer(rows: Rows, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(rows.x, columns=[f"c{i}" for i in range(rows.x.shape[1])])
    clf = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(frame, rows.y_multi)
    joblib.dump(clf, tmp_path / "clf.joblib")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names" from the check
        model = load_model(tmp_path / "clf.joblib")
        assert model.info.evaluator == "hgb-compiled"
        batch = pa.RecordBatch.from_pandas(frame.iloc[:500], preserve_index=False)
        out = model.predict(batch.select(list(reversed(batch.schema.names))))  # any column order
        expected = clf.predict_proba(frame.iloc[:500])
    assert np.array_equal(out.column(0).to_numpy(zero_copy_only=False), clf.predict(frame.iloc[:500]))
    assert _bits(_proba(out, clf.classes_)) == _bits(expected)


def test_the_library_evaluator_keeps_sklearn(rows: Rows, tmp_path: Path) -> None:
    clf = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows.x, rows.y_multi)
    joblib.dump(clf, tmp_path / "clf.joblib")
    assert load_model(tmp_path / "clf.joblib", evaluator="library").info.evaluator == "sklearn"
    assert load_model(tmp_path / "clf.joblib").info.evaluator == "hgb-compiled"
    assert load_model(tmp_path / "clf.joblib", evaluator="compiled").info.evaluator == "hgb-compiled"


def test_compiled_asked_for_without_a_kernel_is_a_load_error(rows: Rows, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hgb, "_kernel", lambda: None)
    est = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(rows.x, rows.y_reg)
    joblib.dump(est, tmp_path / "reg.joblib")
    with pytest.raises(ModelLoadError, match="compiled evaluator was asked for"):
        load_model(tmp_path / "reg.joblib", evaluator="compiled")
    assert load_model(tmp_path / "reg.joblib").info.evaluator == "sklearn"  # "auto" falls back
    lr = _load(LogisticRegression().fit(np.nan_to_num(rows.x), rows.y_bin), tmp_path / "lr.joblib")
    assert load_model(tmp_path / "lr.joblib", evaluator="compiled").info.evaluator == lr.info.evaluator


def test_an_unknown_evaluator_is_a_config_error(tmp_path: Path, rows: Rows) -> None:
    est = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(rows.x, rows.y_reg)
    joblib.dump(est, tmp_path / "reg.joblib")
    with pytest.raises(ConfigError, match="evaluator must be one of auto, compiled, library, not 'numba'"):
        load_model(tmp_path / "reg.joblib", evaluator="numba")


def test_a_kernel_that_differs_is_not_used(rows: Rows, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    real = hgb._kernel()
    assert real is not None

    def off_by_one_ulp(x: Any, *args: Any) -> None:
        real(x, *args)
        out = args[-1]  # [k, n]
        out[:, -1] = np.nextafter(out[:, -1], np.inf)

    monkeypatch.setattr(hgb, "_kernel", lambda: off_by_one_ulp)
    est = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(rows.x, rows.y_reg)
    with caplog.at_level(logging.WARNING, logger="augury.models.hgb"):
        model = _load(est, tmp_path / "reg.joblib")
    assert model.info.evaluator == "sklearn"
    assert "differs from scikit-learn" in caplog.text
    _assert_regressor_exact(model, est, rows)


def test_evaluator_reported_for_other_estimators(rows: Rows, tmp_path: Path) -> None:
    x = np.nan_to_num(rows.x)
    model = _load(LogisticRegression().fit(x, rows.y_bin), tmp_path / "lr.joblib")
    assert model.info.evaluator == "sklearn"
    assert model.info.to_dict()["evaluator"] == "sklearn"


def test_kernel_releases_the_gil(rows: Rows) -> None:
    kernel = hgb._kernel()
    assert kernel is not None and getattr(kernel, "targetoptions", {}).get("nogil") is True
    est = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows.x, rows.y_bin)
    scorer = hgb.exact_scorer(est, 6)
    assert scorer is not None
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(_bits(scorer.raw(rows.x)))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [_bits(est._raw_predict(rows.x))] * 4


def test_kernel_compiles_without_a_disk_cache() -> None:
    """numba cannot cache a function whose source file it cannot locate (as when no cache directory is
    writable): the kernel is then compiled for the process alone."""
    import numba

    namespace: dict[str, Any] = {"np": np, "_BLOCK": hgb._BLOCK}
    exec(compile(inspect.getsource(hgb._raw_scores), "<no file>", "exec"), namespace)
    kernel = hgb._jit(numba, namespace["_raw_scores"])
    x = np.arange(40.0)[:, None]
    est = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(x, x.ravel())
    forest = hgb._Forest(est, 1, kernel)
    x = np.linspace(-5, 45, 101)[:, None]
    assert _bits(forest.raw_predict(x)) == _bits(est._raw_predict(x))
