"""HTTP serving benchmark: ``augury serve`` under wrk, beside a bare endpoint of the same stack, in one run.

What is measured, per system: requests/s; latency p50/p90/p99 (ms, wrk's ``--latency``); non-2xx answers
(wrk counts 4xx and 5xx) and socket errors (connect, read, write, timeout); server CPU in cores (CPU time
of the server's process tree over the load window, divided by the window); peak PSS in MB (summed over the
process tree, sampled every 0.5 s under load); start-up time; and req/s as a ratio to the matching bare
endpoint measured in the same run (same round).

Every system is ONE server process on 127.0.0.1 (a free port), started with OMP/OPENBLAS/MKL threads = 1,
checked with one real request whose answer is validated against the model (start-up fails after
``--start-timeout`` s and is reported with the tail of its stderr), warmed up for ``--warmup`` s, then loaded
with ``wrk -t1 -c<connections> -d<duration>s --timeout 10s --latency -s <script>``, then stopped by
signalling its process group (SIGTERM, then SIGKILL after 15 s). With ``--rounds 2`` the second round runs
the systems in reverse order; the table shows medians over rounds and the median of per-round ratios.

Systems (``--systems``, comma-separated; default: all but the peers; ``all``: everything):

- ``bare``: `bare_server.py`, POST ``/v1/models/hgb20:predict``, one-row v1 body, constant answer.
- ``bare_get``: `bare_server.py`, GET ``/v1/models/hgb20/predictions/<random published key>``.
- ``bare_v2``: `bare_server.py`, POST ``/v2/models/hgb20/infer`` with the ``[1, 20]`` FP64 tensor body.
- ``dynamic``: ``augury serve --model hgb20.joblib``, the v1 body of ``bare``.
  Target: >= 0.6 x bare and p99 < 20 ms.
- ``static``: ``augury serve --store sqlite:///...``, the GETs of ``bare_get``. Target: >= 0.85 x bare_get.
- ``hybrid``: ``augury serve --model ... --store ...``, v1 bodies drawn at random per request from 1,000:
  half carry a published ``key`` (with its features: answered from the store), half unseen features
  without a key (looked up by feature hash, missed, computed). Reported against ``bare``; no target.
- ``dynamic_v2``: dynamic mode, the body of ``bare_v2``. Reported against ``bare_v2``; no target.

Peers (optional; the model-serving peers of ``../shared/bench/http_bench.py``, started the same way, each
from its own venv under ``--peer-venvs`` [/tmp/bench/venvs], with the same model, the same wrk settings
and in the same round as the bare endpoints they are divided by). A peer whose venv is missing is
reported as skipped, with the reason, and the run goes on. The peer scripts are copies in
``benchmarks/peers/`` (nothing is imported from ../shared at run time):

- ``naive``: `peers/starlette_app.py` ``MODE=naive`` in the ``base`` venv (uvicorn, uvloop, httptools, one
  worker, no access log): an async Starlette endpoint calling sklearn ``predict_proba`` per request.
  POST ``/predict`` with ``{"features": [[20 floats]]}`` (the same row as ``body_v1``; a smaller body
  than ``bare``'s named-feature v1 body, so the ratio slightly favours the peer). Against ``bare``.
- ``naive_onnx``: the same app, ``MODE=onnx``: onnxruntime (1 intra-op thread, float32) per request,
  the model's skl2onnx export. Against ``bare``; checked at +- 1e-5 (float32).
- ``mlserver_b32``: ``mlserver start`` (MLServer 1.7.1, ``mlserver_sklearn.SKLearnModel``,
  ``parallel_workers: 0`` = one process, adaptive batching ``max_batch_size: 32``, ``max_batch_time:
  0.002``, no access log), model name ``hgb20`` so it takes the very body and URL of ``bare_v2`` and
  ``dynamic_v2``; ``parameters.extra.predict_fn: predict_proba`` makes it answer probabilities (its
  default output is ``predict``, which computes ``predict_proba`` internally). Against ``bare_v2``.
- ``bentoml_batch``: ``bentoml serve`` of `peers/bento_service.py` (BentoML 1.4.40, one worker, batchable
  API, max_batch_size 64, default max_latency_ms, access log off), features body. Against ``bare``.
- ``ray_batch``: `peers/ray_app.py` (Ray Serve 2.60, one replica, ``@serve.batch`` 32 / 2 ms, its own
  local Ray instance with num_cpus=2: its proxy and replica use both cores). Features body; against
  ``bare``.

Every peer answer is checked against ``predict_proba`` of the body's row (no provenance to check). The
peers' model files are written once into <work>/peers/ by `peers/make_peer_models.py`, run in the peers'
``base`` venv: ``model_s.joblib`` (the harness model, re-dumped; all the venvs pin scikit-learn 1.9.1, as
augury's does), ``model_s.onnx`` and ``body_features.json``. Peers get 180 s to start
(``--start-timeout`` if larger). Setup, once per machine (~5 min; the venvs, wrk; edits nothing here):

    bash ../shared/bench/setup_envs.sh     # -> /tmp/bench/venvs/{base,mlserver,bentoml,ray}

The workload is built once under /tmp/augury-bench/http (``--work``) with augury's own API: a
HistGradientBoostingClassifier (100 iterations, features f0..f19) trained on 200k rows of
make_classification, a 100k-row catalogue with an ``id`` column scored by `augury.batch.run_batch`, and
published by `augury.publish.publish_predictions` to a SQLite store.

wrk scripts: ``benchmarks/wrk/post.lua`` (one body), ``post_random.lua`` (a random body per request),
``get_random.lua`` (a random key per request); each prints a ``WRKJSON {...}`` summary line. The random
scripts format every request once at start-up, so the bare and augury systems they compare pay the same
per-request cost in wrk. Server logs go to <work>/logs/; the report ends with the problems seen (failed
starts with their stderr tail, wrong check answers, non-2xx, error lines in the log, slow start or stop).
``--serve-args`` passes extra options to every ``augury serve`` (e.g. ``'--max-delay-ms 0'``).

The run reported in the issue (about 2.5 minutes; the first run adds a few seconds to build the workload):

    python benchmarks/http_bench.py --duration 10 --out /tmp/augury-bench/http/results.json
    python benchmarks/http_bench.py --systems bare,bare_get --duration 5     # the harness alone

augury beside the peers, one round (about 3 minutes):

    python benchmarks/http_bench.py --duration 8 --rounds 1 --out /tmp/augury-bench/http/peers.json
        --systems bare,bare_v2,dynamic,dynamic_v2,naive,naive_onnx,mlserver_b32,bentoml_batch,ray_batch
    (one command line)
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
WRK_DIR = HERE / "wrk"
PEERS_DIR = HERE / "peers"
WORK = Path("/tmp/augury-bench/http")
#: where ../shared/bench/setup_envs.sh creates the peers' venvs ({base,mlserver,bentoml,ray}).
PEER_VENVS = Path("/tmp/bench/venvs")

MODEL_NAME = "hgb20"
N_FEATURES = 20
TRAIN_ROWS = 200_000
CATALOGUE_ROWS = 100_000
UNSEEN_ROWS = 1_000
HYBRID_BODIES = 1_000
#: bump when `prepare` changes what it writes, so an old workload is rebuilt.
SETUP_VERSION = 1
TOLERANCE = 1e-6
#: onnxruntime scores float32 inputs; its probabilities differ from predict_proba by ~1e-7 here.
ONNX_TOLERANCE = 1e-5
PEER_START_TIMEOUT = 180.0

THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "PYTHONUNBUFFERED": "1"}
#: talk to 127.0.0.1 directly, whatever *_proxy variables say.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------------------------- workload


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

    @property
    def peer_dir(self) -> Path:
        """The peers' files, written by `peers/make_peer_models.py` (see `prepare_peers`)."""
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


# ---------------------------------------------------------------------------------------------- systems

V1 = f"/v1/models/{MODEL_NAME}:predict"
V2 = f"/v2/models/{MODEL_NAME}/infer"
LOOKUP = f"/v1/models/{MODEL_NAME}/predictions/"
#: the environment variable each wrk script reads its data file from.
SCRIPT_DATA = {"post.lua": "BODY_FILE", "post_random.lua": "BODIES_FILE", "get_random.lua": "KEYS_FILE"}


@dataclass(frozen=True)
class Load:
    """What wrk sends: a script in wrk/, the URL path, and the `Workload` file the script reads."""

    script: str
    path: str
    data: str

    def env(self, w: Workload) -> dict[str, str]:
        env = {SCRIPT_DATA[self.script]: str(getattr(w, self.data))}
        if self.script == "get_random.lua":
            env["PATH_PREFIX"] = LOOKUP
        return env


@dataclass(frozen=True)
class Check:
    """One request made before the load, and what its answer must be (`validate` returns a problem)."""

    method: str
    path: str
    body: Any
    validate: Callable[[Any], str | None]


@dataclass(frozen=True)
class Target:
    min_ratio: float
    max_p99_ms: float | None = None

    def text(self) -> str:
        return f">= {self.min_ratio:g}x" + (f", p99 < {self.max_p99_ms:g} ms" if self.max_p99_ms else "")


@dataclass(frozen=True)
class System:
    name: str
    description: str
    #: arguments of ``augury serve`` ({model} and {store} filled in), or None for the bare server.
    serve_args: tuple[str, ...] | None
    load: Load
    checks: Callable[[Workload], list[Check]]
    #: the bare system whose req/s in the same round this one is divided by.
    baseline: str
    target: Target | None = None
    #: set for the peer systems: started from their own venv instead of this interpreter.
    peer: Peer | None = None


#: (workload, port, venvs folder) -> (command, extra environment variables)
Launch = Callable[[Workload, int, Path], tuple[list[str], dict[str, str]]]


@dataclass(frozen=True)
class Peer:
    """A peer server, started as ``../shared/bench/http_bench.py`` starts it, from ``<venvs>/<venv>``."""

    venv: str
    #: the file in ``<venvs>/<venv>/bin/`` the command runs; missing -> the system is skipped.
    exe: str
    launch: Launch

    def missing(self, venvs: Path) -> str | None:
        exe = venvs / self.venv / "bin" / self.exe
        if exe.exists():
            return None
        return f"no {exe} (run `bash ../shared/bench/setup_envs.sh`, or pass --peer-venvs)"


def _uvicorn_peer(mode: str) -> Launch:
    """`peers/starlette_app.py` (a copy of the peers' ``servers/starlette_app.py``) in the base venv."""
    def launch(w: Workload, port: int, venvs: Path) -> tuple[list[str], dict[str, str]]:
        return ([str(venvs / "base" / "bin" / "python"), "-m", "uvicorn", "starlette_app:app",
                 "--app-dir", str(PEERS_DIR), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
                {"MODE": mode, "MODEL_DIR": str(w.peer_dir)})
    return launch


def _mlserver_peer(max_batch_size: int, max_batch_time: float) -> Launch:
    """MLServer's sklearn runtime, ``parallel_workers: 0`` (one process), adaptive batching, the settings
    of the peers' ``mlserver_setup``; ``predict_fn: predict_proba`` makes it answer the probabilities of
    the plain v2 body (its default output is ``predict``)."""
    def launch(w: Workload, port: int, venvs: Path) -> tuple[list[str], dict[str, str]]:
        root = w.peer_dir / "run" / f"mlserver_b{max_batch_size}"
        (root / MODEL_NAME).mkdir(parents=True, exist_ok=True)
        ports = {port}
        while len(ports) < 3:
            ports.add(free_port())
        grpc_port, metrics_port = sorted(ports - {port})
        settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port,
                    "metrics_port": metrics_port, "parallel_workers": 0, "debug": False,
                    "load_models_at_startup": True}
        model_settings = {
            "name": MODEL_NAME, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(w.peer_dir / "model_s.joblib"), "version": "1",
                           "extra": {"predict_fn": "predict_proba"}},
            "max_batch_size": max_batch_size, "max_batch_time": max_batch_time}
        (root / "settings.json").write_text(json.dumps(settings, indent=2))
        (root / MODEL_NAME / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        return [str(venvs / "mlserver" / "bin" / "mlserver"), "start", str(root)], {}
    return launch


def _bentoml_peer(max_batch: int) -> Launch:
    """`peers/bento_service.py` (a copy of the peers' ``servers/bento_service.py``), batchable endpoint."""
    def launch(w: Workload, port: int, venvs: Path) -> tuple[list[str], dict[str, str]]:
        return ([str(venvs / "bentoml" / "bin" / "bentoml"), "serve", "bento_service:ModelS",
                 "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(PEERS_DIR)],
                {"BENTOML_HOME": str(venvs.parent / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true",
                 "MODEL_PATH": str(w.peer_dir / "model_s.joblib"), "BENTO_MAX_BATCH": str(max_batch)})
    return launch


def _ray_peer(max_batch: int, wait_s: float) -> Launch:
    """`peers/ray_app.py` (a copy of the peers' ``servers/ray_app.py``): Ray Serve, one replica,
    ``@serve.batch``; it starts its own local Ray instance."""
    def launch(w: Workload, port: int, venvs: Path) -> tuple[list[str], dict[str, str]]:
        return ([str(venvs / "ray" / "bin" / "python"), str(PEERS_DIR / "ray_app.py")],
                {"PORT": str(port), "MODEL_PATH": str(w.peer_dir / "model_s.joblib"),
                 "RAY_USAGE_STATS_ENABLED": "0", "RAY_BATCH": "1", "RAY_MAX_BATCH": str(max_batch),
                 "RAY_BATCH_WAIT_S": str(wait_s)})
    return launch


def _numbers(obj: Any) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, int | float):
        return [float(obj)]
    if isinstance(obj, dict):
        return [n for v in obj.values() for n in _numbers(v)]
    if isinstance(obj, list):
        return [n for v in obj for n in _numbers(v)]
    return []


def _sources(obj: Any) -> list[Any]:
    """Every ``source`` value in the answer's provenance objects."""
    if isinstance(obj, dict):
        own = [obj["source"]] if "source" in obj else []
        return own + [s for v in obj.values() for s in _sources(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _sources(v)]
    return []


def _proba(w: Workload, which: str, source: str) -> Callable[[Any], str | None]:
    """The answer holds the model's probabilities (``meta[<which>_expected_proba]``), and its provenance
    says they came from `source`."""
    expected = w.meta[f"{which}_expected_proba"]

    def validate(answer: Any) -> str | None:
        numbers = _numbers(answer)
        if not all(any(abs(n - e) <= TOLERANCE for n in numbers) for e in expected):
            return f"the answer does not hold the model's probabilities {list(expected)}"
        if _sources(answer) != [source]:
            return f"provenance source {_sources(answer)}, expected [{source!r}]"
        return None
    return validate


def _proba_only(w: Workload, tolerance: float) -> Callable[[Any], str | None]:
    """A peer's answer (no provenance) holds ``predict_proba`` of the v1 body's row."""
    expected = w.meta["v1_expected_proba"]

    def validate(answer: Any) -> str | None:
        numbers = _numbers(answer)
        if not all(any(abs(n - e) <= tolerance for n in numbers) for e in expected):
            return f"the answer does not hold the model's probabilities {list(expected)} (+- {tolerance:g})"
        return None
    return validate


def _equal(constant: Any) -> Callable[[Any], str | None]:
    return lambda answer: None if answer == constant else "not the bare server's constant"


def _body(path: Path) -> Any:
    return json.loads(path.read_bytes())


def _systems() -> dict[str, System]:
    import bare_server

    model, store = ("--model", "{model}"), ("--store", "{store}")
    post_v1, post_v2 = Load("post.lua", V1, "body_v1"), Load("post.lua", V2, "body_v2")
    get_keys = Load("get_random.lua", "/", "keys")
    systems = [
        System("bare", "bare endpoint: POST v1 one-row body, parse JSON, constant answer", None, post_v1,
               lambda w: [Check("POST", V1, _body(w.body_v1), _equal(bare_server.PREDICT))], "bare"),
        System("bare_get", "bare endpoint: GET a random published key, constant answer", None, get_keys,
               lambda w: [Check("GET", LOOKUP + w.meta["key_check"], None, _equal(bare_server.LOOKUP))],
               "bare_get"),
        System("bare_v2", "bare endpoint: POST v2 [1,20] FP64 tensor, parse JSON, constant answer", None,
               post_v2, lambda w: [Check("POST", V2, _body(w.body_v2), _equal(bare_server.INFER))],
               "bare_v2"),
        System("dynamic", "augury serve --model: POST v1 one-row body", model, post_v1,
               lambda w: [Check("POST", V1, _body(w.body_v1), _proba(w, "v1", "dynamic"))],
               "bare", Target(0.6, 20.0)),
        System("static", "augury serve --store: GET a random published key", store, get_keys,
               lambda w: [Check("GET", LOOKUP + w.meta["key_check"], None,
                                _proba(w, "key", "static"))],
               "bare_get", Target(0.85)),
        System("hybrid", "augury serve --model --store: POST v1, half published keys, half unseen rows",
               (*model, *store), Load("post_random.lua", V1, "hybrid_bodies"),
               lambda w: [Check("POST", V1, w.meta["keyed_body"], _proba(w, "key", "static")),
                          Check("POST", V1, w.meta["unseen_body"], _proba(w, "unseen", "dynamic"))],
               "bare"),
        System("dynamic_v2", "augury serve --model: POST v2 [1,20] FP64 tensor", model, post_v2,
               lambda w: [Check("POST", V2, _body(w.body_v2), _proba(w, "v1", "dynamic"))],
               "bare_v2"),
    ]
    # the peers of ../shared/bench, each from its own venv (see `Peer`); the same model, same row
    features = Load("post.lua", "/predict", "body_features")
    peers = [
        System("naive", "peer: Starlette async endpoint, sklearn predict_proba per request, features body",
               None, features,
               lambda w: [Check("POST", "/predict", _body(w.body_features), _proba_only(w, TOLERANCE))],
               "bare", peer=Peer("base", "python", _uvicorn_peer("naive"))),
        System("naive_onnx", "peer: Starlette async endpoint, onnxruntime per request, features body",
               None, features,
               lambda w: [Check("POST", "/predict", _body(w.body_features), _proba_only(w, ONNX_TOLERANCE))],
               "bare", peer=Peer("base", "python", _uvicorn_peer("onnx"))),
        System("mlserver_b32", "peer: MLServer 1.7.1 sklearn runtime, 1 process, adaptive batching "
               "32 / 2 ms, v2 body", None, post_v2,
               lambda w: [Check("POST", V2, _body(w.body_v2), _proba_only(w, TOLERANCE))],
               "bare_v2", peer=Peer("mlserver", "mlserver", _mlserver_peer(32, 0.002))),
        System("bentoml_batch", "peer: BentoML 1.4 1 worker, batchable API max_batch_size 64, features body",
               None, features,
               lambda w: [Check("POST", "/predict", _body(w.body_features), _proba_only(w, TOLERANCE))],
               "bare", peer=Peer("bentoml", "bentoml", _bentoml_peer(64))),
        System("ray_batch", "peer: Ray Serve 2.60, 1 replica, @serve.batch 32 / 2 ms, features body",
               None, features,
               lambda w: [Check("POST", "/predict", _body(w.body_features), _proba_only(w, TOLERANCE))],
               "bare", peer=Peer("ray", "python", _ray_peer(32, 0.002))),
    ]
    return {s.name: s for s in [*systems, *peers]}


def prepare_peers(w: Workload, venvs: Path) -> str | None:
    """Write the peers' model files and body into `w.peer_dir` with `peers/make_peer_models.py` in the
    peers' base venv, unless already there for this model; returns why it could not."""
    python = venvs / "base" / "bin" / "python"
    stamp = w.peer_dir / "peers_meta.json"
    if stamp.exists() and stamp.stat().st_mtime >= w.model.stat().st_mtime:
        return None
    if not python.exists():
        return f"no {python} to write the peers' model files with"
    print(f"writing the peers' model files into {w.peer_dir} ...", flush=True)
    out = subprocess.run([str(python), str(PEERS_DIR / "make_peer_models.py"), str(w.work)], env=dict(
        os.environ, **THREAD_ENV, PYTHONDONTWRITEBYTECODE="1"), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        stamp.unlink(missing_ok=True)
        return f"peers/make_peer_models.py failed: {out.stderr[-600:]}"
    return None


def _command(system: System, w: Workload, port: int, extra: Sequence[str] = ()) -> list[str]:
    if system.serve_args is None:
        return [sys.executable, str(HERE / "bare_server.py"), "--host", "127.0.0.1", "--port", str(port)]
    exe = Path(sys.executable).with_name("augury")
    augury = [str(exe)] if exe.exists() else [sys.executable, "-c", "from augury.cli import main; main()"]
    args = [a.format(model=w.model, store=w.store_url) for a in system.serve_args]
    return [*augury, "serve", *args, *extra, "--host", "127.0.0.1", "--port", str(port)]


# ---------------------------------------------------------------------------------------------- measuring


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: Any, timeout: float = 5.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with HTTP.open(req, timeout=timeout) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def pss_mb(procs: Sequence[psutil.Process]) -> float:
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_full_info().pss
    return total / 1e6


class PeakPss:
    """Samples the PSS of a process tree every `interval` s on a thread; `.peak` is the largest (MB)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, pss_mb(tree(self.pid)))
            if self._stop.wait(self.interval):
                return


def wrk(system: System, w: Workload, port: int, connections: int, duration: float) -> dict[str, Any]:
    env = dict(os.environ, **system.load.env(w))
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s", "--latency",
           "-s", str(WRK_DIR / system.load.script), f"http://127.0.0.1:{port}{system.load.path}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    m = re.search(r"^WRKJSON (\{.*\})$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk output not parsed (rc={out.returncode}): "
                           f"{out.stdout[-800:]} {out.stderr[-800:]}")
    r: dict[str, Any] = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["non_2xx"] = r["err_status"]
    r["socket_errors"] = sum(r[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    r["command"] = " ".join(cmd)
    return r


@dataclass
class Server:
    system: System
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float = field(default_factory=time.perf_counter)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> float:
        """SIGTERM to the process group, SIGKILL after 15 s, then SIGKILL to the descendants recorded
        before the stop that are still alive 5 s later (a peer's daemons may leave the group, as Ray's
        can); returns how long the stop took."""
        t0 = time.perf_counter()
        descendants = tree(self.proc.pid)[1:]
        for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        _, alive = psutil.wait_procs(descendants, timeout=5.0)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        return time.perf_counter() - t0


def start(system: System, w: Workload, log_dir: Path, round_no: int, extra: Sequence[str],
          venvs: Path = PEER_VENVS) -> Server:
    port = free_port()
    log = log_dir / f"{system.name}_r{round_no}.log"
    env = dict(os.environ, **THREAD_ENV)
    if system.peer is not None:
        cmd, peer_env = system.peer.launch(w, port, venvs)
        # no __pycache__ from the peer scripts in benchmarks/peers/
        env.update(peer_env, PYTHONDONTWRITEBYTECODE="1")
    else:
        cmd = _command(system, w, port, extra)
    with log.open("wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=w.work)
    return Server(system, proc, port, log)


def wait_ready(server: Server, w: Workload, timeout: float) -> list[str]:
    """Poll with the first check request until it answers 200, then run every check; the problems found.

    Raises RuntimeError when the server exits, answers a status that will not change (4xx, 500), or is not
    ready within `timeout` s. A peer is polled through any status until `timeout`, as the peer harness
    does (Ray Serve's proxy answers 404 until its app is deployed)."""
    checks = server.system.checks(w)
    method, path, body = checks[0].method, checks[0].path, checks[0].body
    last = "no answer"
    while time.perf_counter() - server.started < timeout:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with code {server.proc.returncode} before answering")
        try:
            status, raw = request(server.port, method, path, body, timeout=5.0)
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
            time.sleep(0.2)
            continue
        if status == 200:
            break
        last = f"HTTP {status}: {raw[:500].decode(errors='replace')}"
        if status != 503 and server.system.peer is None:
            raise RuntimeError(f"check request {method} {path} answered {last}")
        time.sleep(0.2)
    else:
        raise RuntimeError(f"not ready after {timeout:g} s (last: {last})")
    problems = []
    for check in checks:
        method, path = check.method, check.path
        status, raw = request(server.port, method, path, check.body)
        try:
            answer = json.loads(raw)
        except ValueError:
            problems.append(f"{method} {path}: HTTP {status}, not JSON: {raw[:300]!r}")
            continue
        problem = check.validate(answer) if status == 200 else f"HTTP {status}"
        if problem:
            problems.append(f"{method} {path}: {problem}; got {raw[:400].decode(errors='replace')}")
    return problems


def run_system(system: System, w: Workload, args: argparse.Namespace, round_no: int) -> dict[str, Any]:
    rec: dict[str, Any] = {"system": system.name, "round": round_no, "description": system.description,
                           "baseline": system.baseline}
    skip = system.peer.missing(args.peer_venvs) if system.peer is not None else None
    if system.peer is not None and skip is None:
        skip = args.peer_problem
    if skip:
        rec["skipped"] = skip
        print(f"  {system.name:11s} r{round_no} SKIPPED: {skip}", flush=True)
        return rec
    log_dir = w.work / "logs"
    log_dir.mkdir(exist_ok=True)
    server = start(system, w, log_dir, round_no, shlex.split(args.serve_args), args.peer_venvs)
    rec["command"] = " ".join(server.proc.args)  # type: ignore[arg-type]
    try:
        # the peers are given the peer harness's 180 s (Ray and BentoML start slowly)
        timeout = args.start_timeout if system.peer is None else max(args.start_timeout, PEER_START_TIMEOUT)
        rec["check_problems"] = wait_ready(server, w, timeout)
        rec["startup_s"] = round(time.perf_counter() - server.started, 2)
        rec["pss_idle_mb"] = round(pss_mb(tree(server.proc.pid)), 1)
        wrk(system, w, server.port, args.connections, args.warmup)
        procs = tree(server.proc.pid)
        rec["processes"] = len(procs)
        with PeakPss(server.proc.pid) as peak:
            cpu0, t0 = cpu_seconds(procs), time.perf_counter()
            r = wrk(system, w, server.port, args.connections, args.duration)
            cpu1, t1 = cpu_seconds(procs), time.perf_counter()
        r["server_cores"] = (cpu1 - cpu0) / (t1 - t0)
        r["peak_pss_mb"] = peak.peak
        rec["load"] = r
        if server.proc.poll() is not None:
            rec["error"] = f"server exited with code {server.proc.returncode} during the load"
    except Exception as exc:  # report the system as failed and go on with the next one
        rec["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        rec["stop_s"] = round(server.stop(), 2)
        rec["exit_code"] = server.proc.returncode
        text = server.log.read_text(errors="replace") if server.log.exists() else ""
        rec["log"] = str(server.log)
        flagged = [ln for ln in text.splitlines() if re.search(r"Traceback|ERROR|CRITICAL", ln)]
        rec["log_errors"] = flagged[:20]
        if "error" in rec:
            rec["stderr_tail"] = server.tail()
    _print_line(rec)
    return rec


def _print_line(rec: dict[str, Any]) -> None:
    name = f"{rec['system']:11s} r{rec['round']}"
    if "error" in rec:
        print(f"  {name} FAILED: {rec['error']}\n    stderr tail:\n      "
              + rec.get("stderr_tail", "").replace("\n", "\n      "), flush=True)
        return
    r = rec["load"]
    print(f"  {name} {r['rps']:9.1f} req/s  p50={r['p50_us'] / 1000:6.2f} p90={r['p90_us'] / 1000:6.2f} "
          f"p99={r['p99_us'] / 1000:6.2f} ms  non2xx={r['non_2xx']} sock={r['socket_errors']} "
          f"cores={r['server_cores']:.2f} pss={r['peak_pss_mb']:.0f}MB start={rec['startup_s']}s "
          f"stop={rec['stop_s']}s", flush=True)
    for p in rec["check_problems"]:
        print(f"    !! check: {p}", flush=True)


# ---------------------------------------------------------------------------------------------- report


def summarize(recs: Sequence[dict[str, Any]], systems: dict[str, System],
              order: Sequence[str]) -> list[dict[str, Any]]:
    """One row per system: medians over rounds, ratio = median over rounds of req/s / baseline req/s."""
    rps = {(r["system"], r["round"]): r["load"]["rps"] for r in recs if "load" in r}
    rows: list[dict[str, Any]] = []
    for name in order:
        mine = [r for r in recs if r["system"] == name and "skipped" not in r]
        ok = [r for r in mine if "load" in r]
        s = systems[name]
        row: dict[str, Any] = {"system": name, "rounds": len(ok), "failed_rounds": len(mine) - len(ok),
                               "baseline": s.baseline, "target": s.target.text() if s.target else None}
        skipped = [r["skipped"] for r in recs if r["system"] == name and "skipped" in r]
        if skipped and not mine:
            row["skipped"] = skipped[0]
        if ok:
            def med(key: str, rs: list[dict[str, Any]] = ok) -> float:
                return float(statistics.median(r["load"][key] for r in rs))
            ratios = [r["load"]["rps"] / rps[(s.baseline, r["round"])] for r in ok
                      if (s.baseline, r["round"]) in rps]
            row.update({
                "rps": med("rps"), "p50_ms": med("p50_us") / 1000, "p90_ms": med("p90_us") / 1000,
                "p99_ms": med("p99_us") / 1000, "non_2xx": sum(r["load"]["non_2xx"] for r in ok),
                "socket_errors": sum(r["load"]["socket_errors"] for r in ok),
                "server_cores": med("server_cores"), "peak_pss_mb": max(r["load"]["peak_pss_mb"] for r in ok),
                "startup_s": statistics.median(r["startup_s"] for r in ok),
                "ratio": statistics.median(ratios) if ratios else None,
                "check_ok": not any(r["check_problems"] for r in ok),
            })
            if s.target is not None and ratios:
                meets = row["ratio"] >= s.target.min_ratio
                if s.target.max_p99_ms is not None:
                    meets = meets and row["p99_ms"] < s.target.max_p99_ms
                row["meets_target"] = meets
        rows.append(row)
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| system | req/s | x bare (which) | target | p50 ms | p90 ms | p99 ms | non-2xx | socket err "
        "| server cores | peak PSS MB | start s | check |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['system']} | SKIPPED: {r['skipped']} | | | | | | | | | | | |")
            continue
        if "rps" not in r:
            lines.append(f"| {r['system']} | FAILED | | {r['target'] or ''} | | | | | | | | | |")
            continue
        verdict = {True: "met", False: "NOT met", None: "n/a"}[r.get("meets_target")]
        target = f"{r['target']}: {verdict}" if r["target"] else ""
        if r["baseline"] == r["system"]:
            ratio = ""
        elif r["ratio"] is None:
            ratio = f"n/a ({r['baseline']} not run)"
        else:
            ratio = f"{r['ratio']:.2f} ({r['baseline']})"
        lines.append(
            f"| {r['system']} | {r['rps']:,.0f} | {ratio} | {target} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['non_2xx']} | {r['socket_errors']} | {r['server_cores']:.2f} "
            f"| {r['peak_pss_mb']:.0f} | {r['startup_s']:.1f} | {'ok' if r['check_ok'] else 'FAIL'} |")
    return "\n".join(lines)


def server_notes(recs: Sequence[dict[str, Any]]) -> list[str]:
    """What the server's author should look at: failures, wrong answers, errors, slow start or stop."""
    notes = []
    for r in recs:
        where = f"{r['system']} (round {r['round']})"
        if "skipped" in r:
            continue
        if "error" in r:
            tail = r.get("stderr_tail", "").strip().replace("\n", "\n    ")
            notes.append(f"{where} FAILED: {r['error']}" + (f"\n    {tail}" if tail else ""))
        notes.extend(f"{where} check: {p}" for p in r.get("check_problems", []))
        load = r.get("load", {})
        if load.get("non_2xx") or load.get("socket_errors"):
            notes.append(f"{where}: {load['non_2xx']} non-2xx answers, {load['socket_errors']} socket errors "
                         f"of {load['requests']:,} requests")
        if r.get("log_errors"):
            notes.append(f"{where}: error lines in {r['log']}: {r['log_errors'][:3]}")
        if r.get("startup_s", 0) > 10:
            notes.append(f"{where}: slow start, {r['startup_s']:.1f} s to the first valid answer")
        if r.get("stop_s", 0) > 5:
            notes.append(f"{where}: slow stop, {r['stop_s']:.1f} s after SIGTERM to the process group")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))  # bare_server, for its constants
    systems = _systems()
    own = [n for n, s in systems.items() if s.peer is None]
    peers = [n for n, s in systems.items() if s.peer is not None]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(own),
                    help=f"comma-separated; default: {','.join(own)}; 'all' adds the peers {','.join(peers)}")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per system [10]")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections [32]")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; even rounds run in reverse order [1]")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of discarded load first [3]")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds a server has to answer [60]")
    ap.add_argument("--work", type=Path, default=WORK, help=f"workload and logs folder [{WORK}]")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the workload even if it exists")
    ap.add_argument("--serve-args", default="",
                    help="extra arguments for every `augury serve`, e.g. --serve-args='--max-delay-ms 0'")
    ap.add_argument("--peer-venvs", type=Path, default=PEER_VENVS,
                    help=f"the peers' venvs (../shared/bench/setup_envs.sh) [{PEER_VENVS}]")
    ap.add_argument("--out", type=Path, help="write every record and the summary to this JSON file")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    if names == ["all"]:
        names = list(systems)
    unknown = [n for n in names if n not in systems]
    if unknown:
        ap.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(systems)}")
    if shutil.which("wrk") is None:
        ap.error("wrk is not on PATH")

    w = prepare(args.work, args.rebuild)
    args.peer_problem = None
    if any(systems[n].peer is not None for n in names):
        args.peer_problem = prepare_peers(w, args.peer_venvs)
    recs = []
    for round_no in range(1, args.rounds + 1):
        order = names if round_no % 2 else names[::-1]
        print(f"== round {round_no}: {', '.join(order)} (c={args.connections}, {args.duration:g} s)",
              flush=True)
        for name in order:
            recs.append(run_system(systems[name], w, args, round_no))
    rows = summarize(recs, systems, names)
    table = markdown(rows)
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration:g}s --timeout 10s --latency; "
          f"{args.rounds} round(s), medians; 'x bare' = req/s / the named bare endpoint's req/s "
          f"in the same round; {os.cpu_count()} CPUs\n")
    print(table)
    skipped = {r["system"]: r["skipped"] for r in recs if "skipped" in r}
    if skipped:
        print("\nSkipped:\n" + "\n".join(f"- {n}: {why}" for n, why in skipped.items()))
    notes = server_notes(recs)
    if notes:
        print("\nServer problems seen:\n" + "\n".join(f"- {n}" for n in notes))
    failed = [r for r in recs if "error" in r]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "argv": sys.argv, "python": platform.python_version(), "cpus": os.cpu_count(),
            "workload": w.meta, "skipped": skipped, "summary": rows, "records": recs, "table": table,
            "notes": notes},
            indent=2, default=str))
        print(f"\nresults -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
