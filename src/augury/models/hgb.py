"""scikit-learn's HistGradientBoosting models scored in one compiled pass, equal to scikit-learn to the bit.

Why: scikit-learn walks each tree in its own Cython call (memoryviews acquired, an OpenMP region opened),
about 8 µs per tree per call whatever the batch size, so a 100-tree model takes ~600 µs to score the
few rows a server batch holds, while walking the trees takes ~2 µs a row. Here the trees are packed once,
at load, into flat arrays that one numba kernel walks for the whole batch, without the GIL (the server
scores on a thread while its event loop runs).

Exactness: the kernel takes scikit-learn's decisions (NaN follows ``missing_go_to_left``, else
``x <= num_threshold`` goes left) and adds the same float64 leaf values in the same order: each row
starts at ``0.0 + baseline[k]`` and adds its trees iteration by iteration, as ``_raw_predict`` does. The
raw scores are then turned into labels, probabilities or values by scikit-learn's own steps (its loss,
its link). Each model is still checked when it is loaded: on probe rows (NaN, zeros, huge, tiny and
threshold values) the answers must equal its public ``predict``, ``predict_proba`` and
``decision_function`` bit for bit, or the model is scored by scikit-learn as before.

numba is optional (``augury[fast]``): it is imported when the first such model loads; without it, or
if compiling fails, the adapter keeps scikit-learn (logged once, at INFO), unless the evaluator asked
for is ``"compiled"`` (`augury.models.evaluator`), which makes that a load error. Models with categorical
splits or a categorical preprocessor are out of scope and stay with scikit-learn too. The compiled kernel
is cached on disk where numba finds a writable place (beside this file, else its user cache dir or
``NUMBA_CACHE_DIR``); where it finds none, the kernel is compiled for the process alone.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from augury.errors import MissingExtraError, ModelLoadError
from augury.models._common import Array
from augury.models.evaluator import HGB_COMPILED, SKLEARN, Choice

log = logging.getLogger(__name__)

_MODULE = "sklearn.ensemble._hist_gradient_boosting.gradient_boosting."
CLASSIFIER = _MODULE + "HistGradientBoostingClassifier"
REGRESSOR = _MODULE + "HistGradientBoostingRegressor"
_BLOCK = 64  # rows walked together through one tree: their independent steps overlap in the CPU


class HGBScorer:
    """A fitted model's predictions from ONE pass of raw scores (`raw`: the compiled kernel, or
    scikit-learn's ``_raw_predict``), then exactly the steps of scikit-learn's own methods."""

    def __init__(self, est: Any, raw: Callable[[Array], Array], evaluator: str) -> None:
        self._est = est
        self.raw = raw
        self.evaluator = evaluator  # HGB_COMPILED | SKLEARN

    def labels(self, raw: Array) -> Array:
        """``predict``: binary, raw > 0 (a tie goes to the first class); multiclass, argmax."""
        encoded = (raw.ravel() > 0).astype(int) if raw.shape[1] == 1 else np.argmax(raw, axis=1)
        return np.asarray(self._est.classes_[encoded])

    def proba(self, raw: Array) -> Array:
        """``predict_proba``; a lone row of class scores is scored as a pair, as in any larger batch: its
        [1, k] scores are contiguous, and NumPy then sums them for the softmax pairwise (from 8 classes),
        not class by class as the columns of a longer Fortran-order array, which can move the last bit."""
        if raw.shape[0] == 1 and raw.shape[1] > 1:
            return np.asarray(self._est._loss.predict_proba(np.asfortranarray(np.repeat(raw, 2, axis=0))))[:1]
        return np.asarray(self._est._loss.predict_proba(raw))

    def values(self, raw: Array) -> Array:
        """A regressor's ``predict``: the inverse link of the single column of raw scores."""
        return np.asarray(self._est._loss.link.inverse(raw.ravel()))


def exact_scorer(est: Any, n_features: int, *, evaluator: Choice = "auto",
                 as_input: Callable[[Array], Any] | None = None) -> HGBScorer | None:
    """The one-pass scorer for `est` fed a float64 matrix, if it equals `est`'s public methods on probe
    rows: compiled unless `evaluator` is "library", when numba is there and the model fits it, else
    (classifiers) scikit-learn's raw scores; None for anything else, which the adapter scores with
    ``predict``. With `evaluator` "compiled", a model the kernel could score while numba is missing (or
    fails to compile it) is a ModelLoadError.

    `as_input` turns a matrix into what `est` itself is fed (a model fitted on a DataFrame: a DataFrame
    with its columns), for the check; such a model gets the compiled scorer or none."""
    kind = f"{type(est).__module__}.{type(est).__qualname__}"
    if kind not in (CLASSIFIER, REGRESSOR):
        return None
    candidates: list[HGBScorer] = []
    forest = None
    if evaluator != "library":
        forest = _forest(est, n_features, kind, required=evaluator == "compiled")
    if forest is not None:
        candidates.append(HGBScorer(est, forest.raw_predict, HGB_COMPILED))
    if kind == CLASSIFIER and hasattr(est, "_raw_predict") and as_input is None:
        candidates.append(HGBScorer(est, est._raw_predict, SKLEARN))
    if not candidates:
        return None
    probe = probe_rows(est, n_features)
    with _one_thread():  # sklearn's OpenMP threads on a busy small machine made the check take seconds
        for scorer in candidates:
            if _agrees(scorer, est, probe, as_input):
                return scorer
            if scorer.evaluator == HGB_COMPILED:
                log.warning("%s: the compiled kernel differs from scikit-learn on probe rows; not used", kind)
    return None


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """OpenMP and BLAS limited to one thread in this block (threadpoolctl comes with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _agrees(scorer: HGBScorer, est: Any, x: Array, as_input: Callable[[Array], Any] | None = None) -> bool:
    """Whether `scorer` gives, to the bit, what `est`'s public methods give on `x` (as `as_input` makes it
    for `est`, if given)."""
    try:
        raw = scorer.raw(x)
        fed = as_input(x) if as_input is not None else x
        if hasattr(est, "classes_"):
            decision = raw.ravel() if raw.shape[1] == 1 else raw
            return (
                np.array_equal(scorer.labels(raw), est.predict(fed))
                and _same_bits(scorer.proba(raw), est.predict_proba(fed))
                and _same_bits(decision, est.decision_function(fed))
            )
        return raw.shape[1] == 1 and _same_bits(scorer.values(raw), est.predict(fed))
    except Exception:  # any difference in scikit-learn's private API: keep its public path
        log.debug("one-pass scoring check failed", exc_info=True)
        return False


def _same_bits(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())


def probe_rows(est: Any, n_features: int) -> Array:
    """Rows that reach the edge cases: random, all-special (NaN, ±0, ±inf, huge, tiny), special values
    sprinkled among random ones, every split threshold of every feature (at most 255 a feature, its bins'
    edges), and thresholds nudged up by one ulp."""
    rng = np.random.default_rng(0)
    special = np.array([np.nan, 0.0, -0.0, np.inf, -np.inf, 1e300, -1e300, np.finfo(np.float64).max,
                        -np.finfo(np.float64).max, 5e-324, -5e-324, 1e-300])
    mixed = rng.normal(size=(64, n_features)) * 3
    mask = rng.random(mixed.shape) < 0.3
    mixed[mask] = rng.choice(special, size=int(mask.sum()))
    thresholds = _thresholds(est, n_features)
    at = rng.normal(size=(max([64, *map(len, thresholds)]), n_features)) * 3
    above = rng.normal(size=(64, n_features)) * 3
    for f, values in enumerate(thresholds):
        if values.size:
            at[:, f] = rng.permutation(np.resize(values, len(at)))
            above[:, f] = np.nextafter(rng.choice(values, size=len(above)), np.inf)
    rows = [rng.normal(size=(64, n_features)) * 3, np.repeat(special[:, None], n_features, axis=1), mixed, at,
            above]
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float64)


def _thresholds(est: Any, n_features: int) -> list[Array]:
    """The split thresholds of each feature (empty where unreadable)."""
    try:
        nodes = np.concatenate([p.nodes for it in est._predictors for p in it])
        inner = nodes[nodes["is_leaf"] == 0]
        return [np.unique(inner["num_threshold"][inner["feature_idx"] == f]) for f in range(n_features)]
    except Exception:
        return [np.empty(0)] * n_features


def _forest(est: Any, n_features: int, kind: str, *, required: bool = False) -> _Forest | None:
    """`est`'s trees packed for the compiled kernel; None (and why, logged) when that cannot be.
    `required`: a model the kernel fits while the kernel is unavailable is a ModelLoadError."""
    try:
        reason = _unsupported(est)
        kernel = _kernel() if reason is None else None
        if kernel is None:
            if reason is None and required:
                raise _unavailable(kind)
            log.debug("%s is scored by scikit-learn: %s", kind, reason or "numba is unavailable")
            return None
        return _Forest(est, n_features, kernel)
    except ModelLoadError:
        raise
    except Exception as exc:
        log.warning("%s: cannot pack its trees for the compiled kernel (%s)", kind, exc)
        return None


def _unavailable(kind: str) -> ModelLoadError:
    """The error for the compiled evaluator asked for and the kernel unavailable."""
    what = kind.rpartition(".")[2]
    if importlib.util.find_spec("numba") is None:
        return MissingExtraError(f"the compiled evaluator (asked for) of a {what}", "fast", "numba")
    return ModelLoadError(f"the compiled evaluator was asked for, but numba failed to compile its kernel "
                          f"(see the log); use the evaluator 'auto' to score {what} models with "
                          f"scikit-learn")


def _unsupported(est: Any) -> str | None:
    """Why the kernel cannot score `est`, or None."""
    if getattr(est, "_preprocessor", None) is not None:
        return "it encodes categorical features"
    if not all(hasattr(est, a) for a in ("_predictors", "_baseline_prediction", "n_trees_per_iteration_")):
        return "its fitted attributes are not the ones this kernel reads"
    if any(p.nodes["is_categorical"].any() for it in est._predictors for p in it):
        return "it has categorical splits"
    return None


class _Forest:
    """The trees packed for the kernel: per node ``links`` = (feature, left, right, NaN goes left) as
    uint32 (unsigned indices walk faster) and one float64 ``values`` (threshold, or a leaf's value). A
    leaf links to itself, so a tree is walked in a fixed number of steps, its depth, without branches."""

    def __init__(self, est: Any, n_features: int, kernel: Callable[..., None]) -> None:
        trees = [p for it in est._predictors for p in it]
        k = int(est.n_trees_per_iteration_)
        if any(len(it) != k for it in est._predictors) or not trees:
            raise ValueError(f"expected {k} trees per iteration")
        baseline = np.asarray(est._baseline_prediction, dtype=np.float64).ravel()
        if baseline.shape != (k,):
            raise ValueError(f"baseline of shape {baseline.shape}, expected ({k},)")
        sizes = np.array([len(t.nodes) for t in trees], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        nodes = np.concatenate([t.nodes for t in trees])
        if len(nodes) >= 2**32 - 1:
            raise ValueError("too many nodes")
        leaf = nodes["is_leaf"] != 0
        own = np.arange(len(nodes), dtype=np.int64)
        start, size = np.repeat(offsets, sizes), np.repeat(sizes, sizes)
        feature = nodes["feature_idx"].astype(np.int64)
        left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)
        inner = ~leaf
        if ((feature[inner] < 0) | (feature[inner] >= n_features)).any():
            raise ValueError("a split on a feature out of range")
        if ((left[inner] >= size[inner]) | (right[inner] >= size[inner])).any():
            raise ValueError("a child out of its tree")
        nan_left = inner & (nodes["missing_go_to_left"] != 0)
        links = np.stack([np.where(leaf, 0, feature), np.where(leaf, own, left + start),
                          np.where(leaf, own, right + start), nan_left], axis=1)
        self.n_features, self.k = n_features, k
        self._kernel = kernel
        self._args = (
            baseline,
            offsets.astype(np.uint32),
            np.tile(np.arange(k), len(est._predictors)).astype(np.uint32),
            _depths(offsets, links, leaf),
            np.ascontiguousarray(links, dtype=np.uint32),
            np.where(leaf, nodes["value"], nodes["num_threshold"]).astype(np.float64),
        )
        for a in self._args:
            a.flags.writeable = False

    def raw_predict(self, x: Array) -> Array:
        """The raw scores [n, k] of the rows of `x`, as ``_raw_predict`` gives them (in Fortran order too)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-D array of {self.n_features} features, got shape {x.shape}")
        out = np.empty((self.k, x.shape[0]), dtype=np.float64)
        self._kernel(x, *self._args, out)
        return out.T


def _depths(roots: Array, links: Array, leaf: Array) -> Array:
    """Each tree's depth (most steps from its root to a leaf); ValueError if a tree has a cycle."""
    depth = np.zeros(len(roots), dtype=np.uint32)
    frontier, owner = roots.astype(np.int64), np.arange(len(roots))
    for level in range(1, len(links) + 1):
        inner = ~leaf[frontier]
        if not inner.any():
            return depth
        frontier, owner = frontier[inner], owner[inner]
        depth[owner] = level
        frontier, owner = np.concatenate([links[frontier, 1], links[frontier, 2]]), np.tile(owner, 2)
        if len(frontier) > len(links):
            break
    raise ValueError("a tree is not a tree (a cycle)")


def _raw_scores(x: Any, baseline: Any, roots: Any, columns: Any, depths: Any, links: Any, values: Any,
                out: Any) -> None:
    """The kernel (compiled by `_kernel`): ``out[k, i] = 0.0 + baseline[k]``, then each tree's leaf value
    added to its class `k` in tree order (`out` is [k, n]: its transpose is scikit-learn's Fortran-order
    [n, k] array). Rows go by blocks; within a block, tree by tree and level by level, each row's step
    being independent of the others'."""
    n = x.shape[0]
    for i in range(n):
        for k in range(baseline.shape[0]):
            out[k, i] = 0.0 + baseline[k]
    node = np.empty(_BLOCK, dtype=np.uint32)
    for start in range(0, n, _BLOCK):
        m = min(n - start, _BLOCK)
        for t in range(roots.shape[0]):
            node[:m] = roots[t]
            for _ in range(depths[t]):
                for j in range(m):
                    at = node[j]
                    v = x[start + j, links[at, 0]]
                    go_left = (v <= values[at]) | (np.isnan(v) & (links[at, 3] != 0))
                    node[j] = links[at, 2 - np.uint32(go_left)]
            k = columns[t]
            for j in range(m):
                out[k, start + j] += values[node[j]]


@functools.cache
def _kernel() -> Callable[..., None] | None:
    """`_raw_scores` compiled (once per process), or None when numba is missing or fails to compile it."""
    try:
        import numba
    except Exception as exc:
        log.info("numba is not available (%s): HistGradientBoosting models are scored by scikit-learn; "
                 "install augury[fast] for the compiled evaluator", exc)
        return None
    try:
        return _jit(numba, _raw_scores)
    except Exception as exc:
        log.info("compiling the HistGradientBoosting kernel failed (%s: %s): HistGradientBoosting models "
                 "are scored by scikit-learn", type(exc).__name__, exc)
        return None


def _jit(numba: Any, func: Callable[..., None]) -> Callable[..., None]:
    """`func` compiled without the GIL for the kernel's one signature (read-only inputs, so arrays of any
    writability match it); cached on disk when numba finds a writable cache directory."""
    t = numba.types

    def ro(dtype: Any, ndim: int) -> Any:
        return t.Array(dtype, ndim, "C", readonly=True)

    u32 = ro(t.uint32, 1)
    signature = t.void(ro(t.float64, 2), ro(t.float64, 1), u32, u32, u32, ro(t.uint32, 2), ro(t.float64, 1),
                       t.Array(t.float64, 2, "C"))
    try:
        compiled: Callable[..., None] = numba.njit(signature, nogil=True, cache=True)(func)
    except Exception as exc:  # e.g. "cannot cache function ...: no locator available" (no writable dir)
        log.info("the HistGradientBoosting kernel is compiled without a disk cache (%s)", exc)
        compiled = numba.njit(signature, nogil=True, cache=False)(func)
    return compiled
