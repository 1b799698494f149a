"""The model-serving peers (MLServer, BentoML, Ray Serve, naive per-request servers), each started from its
own venv.

Each peer is started from ``<venvs>/<venv>`` (``--peer-venvs``, /tmp/bench/venvs, made by
``bash benchmarks/peers/setup_envs.sh``), serving the same model; a peer whose venv is missing is skipped
with the reason. The peer scripts are in ``benchmarks/peers/``; the peers' model files are written once
into <work>/peers/ by `peers/make_peer_models.py`, run in the peers' ``base`` venv (`prepare_peers`).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .servers import free_port
from .workload import MODEL_NAME, PEERS_DIR, THREAD_ENV, Workload

#: Ray and BentoML start slowly: the peers get the peer harness's 180 s (``--start-timeout`` if larger).
PEER_START_TIMEOUT = 180.0

#: (workload, port, venvs folder) -> (command, extra environment variables)
Launch = Callable[[Workload, int, Path], tuple[list[str], dict[str, str]]]


@dataclass(frozen=True)
class Peer:
    """A peer server, started from ``<venvs>/<venv>``."""

    venv: str
    #: the file in ``<venvs>/<venv>/bin/`` the command runs; missing -> the system is skipped.
    exe: str
    launch: Launch

    def missing(self, venvs: Path) -> str | None:
        exe = venvs / self.venv / "bin" / self.exe
        if exe.exists():
            return None
        return f"no {exe} (run `bash benchmarks/peers/setup_envs.sh`, or pass --peer-venvs)"


def uvicorn_peer(mode: str) -> Launch:
    """`peers/starlette_app.py` (a copy of the peers' ``servers/starlette_app.py``) in the base venv."""
    def launch(w: Workload, port: int, venvs: Path) -> tuple[list[str], dict[str, str]]:
        return ([str(venvs / "base" / "bin" / "python"), "-m", "uvicorn", "starlette_app:app",
                 "--app-dir", str(PEERS_DIR), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                 "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
                {"MODE": mode, "MODEL_DIR": str(w.peer_dir)})
    return launch


def mlserver_peer(max_batch_size: int, max_batch_time: float) -> Launch:
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


def bentoml_peer(max_batch: int) -> Launch:
    """`peers/bento_service.py` (a copy of the peers' ``servers/bento_service.py``), batchable endpoint."""
    def launch(w: Workload, port: int, venvs: Path) -> tuple[list[str], dict[str, str]]:
        return ([str(venvs / "bentoml" / "bin" / "bentoml"), "serve", "bento_service:ModelS",
                 "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(PEERS_DIR)],
                {"BENTOML_HOME": str(venvs.parent / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true",
                 "MODEL_PATH": str(w.peer_dir / "model_s.joblib"), "BENTO_MAX_BATCH": str(max_batch)})
    return launch


def ray_peer(max_batch: int, wait_s: float) -> Launch:
    """`peers/ray_app.py` (a copy of the peers' ``servers/ray_app.py``): Ray Serve, one replica,
    ``@serve.batch``; it starts its own local Ray instance."""
    def launch(w: Workload, port: int, venvs: Path) -> tuple[list[str], dict[str, str]]:
        return ([str(venvs / "ray" / "bin" / "python"), str(PEERS_DIR / "ray_app.py")],
                {"PORT": str(port), "MODEL_PATH": str(w.peer_dir / "model_s.joblib"),
                 "RAY_USAGE_STATS_ENABLED": "0", "RAY_BATCH": "1", "RAY_MAX_BATCH": str(max_batch),
                 "RAY_BATCH_WAIT_S": str(wait_s)})
    return launch


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
