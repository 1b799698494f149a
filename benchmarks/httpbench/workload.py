"""The workload every system is loaded with, built once with augury's own API, and the paths and routes.

Under ``--work`` (/tmp/augury-bench/http): a HistGradientBoostingClassifier (100 iterations, features
f0..f19) trained on 200k rows of make_classification, a 100k-row catalogue with an ``id`` column scored by
`augury.batch.run_batch` and published by `augury.publish.publish_predictions` to a SQLite store, the
request bodies and keys the wrk scripts send, and ``meta.json``: what the check requests must get back.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the benchmarks/ folder (bare_server.py, wrk/, peers/).
BENCH = Path(__file__).resolve().parent.parent
WRK_DIR = BENCH / "wrk"
PEERS_DIR = BENCH / "peers"
WORK = Path("/tmp/augury-bench/http")
#: where benchmarks/peers/setup_envs.sh creates the peers' venvs ({base,mlserver,bentoml,ray}).
PEER_VENVS = Path("/tmp/bench/venvs")

MODEL_NAME = "hgb20"
N_FEATURES = 20
TRAIN_ROWS = 200_000
CATALOGUE_ROWS = 100_000
UNSEEN_ROWS = 1_000
HYBRID_BODIES = 1_000
#: bump when `prepare` changes what it writes, so an old workload is rebuilt.
SETUP_VERSION = 1

V1 = f"/v1/models/{MODEL_NAME}:predict"
V2 = f"/v2/models/{MODEL_NAME}/infer"
LOOKUP = f"/v1/models/{MODEL_NAME}/predictions/"

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Workload:
    """The files every system is loaded with, and the answers its check request must get."""

    work: Path
    model: Path
    store_url: str
    body_v1: Path
    body_v2: Path
    keys: Path
    hybrid_bodies: Path
    meta: dict[str, Any]
    #: the catalogue published to Redis too (`publish_to_redis`), for the systems served from it
    redis_url: str | None = None

    @property
    def peer_dir(self) -> Path:
        """The peers' files, written by `peers/make_peer_models.py` (see `peers.prepare_peers`)."""
        return self.work / "peers"

    @property
    def body_features(self) -> Path:
        """``{"features": [[20 floats]]}``: the row of `body_v1`, as the peers' Starlette apps take it."""
        return self.peer_dir / "body_features.json"


def prepare(work: Path, rebuild: bool = False) -> Workload:
    """Build the model, the published store and the request files under `work`, unless already there."""
    work.mkdir(parents=True, exist_ok=True)
    meta_path = work / "meta.json"
    meta: dict[str, Any] | None = None
    if meta_path.exists() and not rebuild:
        meta = json.loads(meta_path.read_text())
        if meta.get("setup_version") != SETUP_VERSION:
            meta = None
    if meta is None:
        print(f"building the workload in {work} (once) ...", flush=True)
        meta = _build(work)
        meta_path.write_text(json.dumps(meta, indent=2))
    return Workload(
        work=work,
        model=work / f"{MODEL_NAME}.joblib",
        store_url=f"sqlite:///{work / 'store.db'}",
        body_v1=work / "body_v1.json",
        body_v2=work / "body_v2.json",
        keys=work / "keys.txt",
        hybrid_bodies=work / "bodies_hybrid.jsonl",
        meta=meta,
    )


def _build(work: Path) -> dict[str, Any]:
    import joblib
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sklearn
    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier

    import augury
    from augury.batch import BatchOptions, run_batch
    from augury.publish import publish_predictions
    from augury.store import open_store
    from augury.verify import load_checks

    started = time.perf_counter()
    x, y = make_classification(n_samples=TRAIN_ROWS + CATALOGUE_ROWS + UNSEEN_ROWS, n_features=N_FEATURES,
                               n_informative=10, n_redundant=5, random_state=0)
    x_train, y_train = x[:TRAIN_ROWS], y[:TRAIN_ROWS]
    x_cat = x[TRAIN_ROWS:TRAIN_ROWS + CATALOGUE_ROWS]
    x_unseen = x[TRAIN_ROWS + CATALOGUE_ROWS:]
    # early_stopping=False: exactly 100 trees (the default turns early stopping on past 10k rows).
    clf = HistGradientBoostingClassifier(max_iter=100, early_stopping=False, random_state=0)
    clf.fit(x_train, y_train)
    model = work / f"{MODEL_NAME}.joblib"
    joblib.dump(clf, model)
    model.with_name(f"{MODEL_NAME}.augury.toml").write_text(f'name = "{MODEL_NAME}"\nversion = "1"\n')

    names = [f"f{j}" for j in range(N_FEATURES)]
    ids = [f"c{i:07d}" for i in range(CATALOGUE_ROWS)]
    catalogue = work / "catalogue.parquet"
    pq.write_table(pa.table({"id": ids, **{n: x_cat[:, j] for j, n in enumerate(names)}}), catalogue)
    predictions = work / "predictions.parquet"
    batch = run_batch(str(model), catalogue, predictions, BatchOptions(key_columns=("id",)))

    db = work / "store.db"
    for old in (db, db.with_name("store.db-wal"), db.with_name("store.db-shm")):
        old.unlink(missing_ok=True)
    store = open_store(f"sqlite:///{db}")
    try:
        published = publish_predictions(predictions, store, load_checks(None))
    finally:
        store.close()

    def row(values: Any) -> dict[str, float]:
        return {n: float(v) for n, v in zip(names, values, strict=True)}

    (work / "body_v1.json").write_bytes(json.dumps({"instances": [row(x_unseen[0])]}).encode())
    (work / "body_v2.json").write_bytes(json.dumps({"inputs": [{
        "name": "input-0", "shape": [1, N_FEATURES], "datatype": "FP64",
        "data": [float(v) for v in x_unseen[0]]}]}).encode())
    (work / "keys.txt").write_text("\n".join(ids) + "\n")
    rng = np.random.default_rng(1)
    picked = rng.choice(CATALOGUE_ROWS, size=HYBRID_BODIES // 2, replace=False)
    lines = []
    for k, i in enumerate(picked):
        lines.append(json.dumps({"instances": [{"key": ids[i], **row(x_cat[i])}]}))
        lines.append(json.dumps({"instances": [row(x_unseen[1 + k])]}))
    (work / "bodies_hybrid.jsonl").write_text("\n".join(lines) + "\n")

    proba_unseen = clf.predict_proba(x_unseen[:2])
    proba_cat = clf.predict_proba(x_cat[:1])
    return {
        "setup_version": SETUP_VERSION,
        "built_s": round(time.perf_counter() - started, 1),
        "model": {"name": MODEL_NAME, "class": "HistGradientBoostingClassifier", "max_iter": 100,
                  "n_iter": int(clf.n_iter_), "train_rows": TRAIN_ROWS, "features": N_FEATURES},
        "catalogue_rows": CATALOGUE_ROWS,
        "batch": batch.to_dict(),
        "store_version": published.version.version,
        "versions": {"augury": getattr(augury, "__version__", "?"), "scikit-learn": sklearn.__version__,
                     "numpy": np.__version__},
        # what the check requests must get back
        "v1_expected_proba": [float(v) for v in proba_unseen[0]],
        "key_check": ids[0],
        "key_expected_proba": [float(v) for v in proba_cat[0]],
        "keyed_body": {"instances": [{"key": ids[0], **row(x_cat[0])}]},
        "unseen_body": {"instances": [row(x_unseen[1])]},
        "unseen_expected_proba": [float(v) for v in proba_unseen[1]],
    }


def publish_to_redis(w: Workload, url: str) -> Workload:
    """`w` with its catalogue's predictions published (verified, as to SQLite) into the Redis at `url`
    (the database is emptied first), for the systems served from Redis."""
    import redis

    from augury.publish import publish_predictions
    from augury.store import open_store
    from augury.verify import load_checks

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    store = open_store(url)
    try:
        publish_predictions(w.work / "predictions.parquet", store, load_checks(None))
    finally:
        store.close()
    return dataclasses.replace(w, redis_url=url)
