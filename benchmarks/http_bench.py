"""HTTP serving benchmark: ``augury serve`` under wrk, beside a bare endpoint of the same stack, in one run.

What is measured, per system: requests/s; latency p50/p90/p99 (ms, wrk's ``--latency``); non-2xx answers
(wrk counts 4xx and 5xx) and socket errors (connect, read, write, timeout); server CPU in cores (CPU time
of the server's process tree over the load window, divided by the window); peak PSS in MB (summed over the
process tree, sampled every 0.5 s under load); start-up time; and req/s as a ratio to the matching bare
endpoint measured in the same run (same round): ``x bare`` against the bare endpoint on uvicorn's plain
httptools protocol (the issue's definition) and, for augury's systems, ``x bare, same protocol`` against
the bare endpoint served with the HTTP protocol ``augury serve`` uses (`bare_server.py --coalesce`:
`augury.serve.protocol.AuguryHttpProtocol`, one socket write per response). Targets are judged
against each.

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
- ``bare_c``, ``bare_get_c``, ``bare_v2_c``: the same, `bare_server.py --coalesce` (augury's HTTP
  protocol); each is reported against its plain twin (the gain of the protocol alone).
- ``dynamic``: ``augury serve --model hgb20.joblib``, the v1 body of ``bare``.
  Target: >= 0.6 x bare and p99 < 20 ms (and the same against ``bare_c``).
- ``static``: ``augury serve --store sqlite:///...``, the GETs of ``bare_get``. Target: >= 0.95 x bare_get
  (and the same against ``bare_get_c``).
- ``static_zipf``: the static server, GETs of the same 100,000 published keys drawn from a Zipf
  distribution (exponent 1.1; `wrk/get_zipf.lua`, a fixed table of 200,000 draws) instead of uniformly.
  Reported against ``bare_get`` and ``bare_get_c``; no target (informational: the store keeps 65,536
  decoded records in memory by default, which skewed traffic benefits from).
- ``hybrid``: ``augury serve --model ... --store ...``, v1 bodies drawn at random per request from 1,000:
  half carry a published ``key`` (with its features: answered from the store), half unseen features
  without a key (looked up by feature hash, missed, computed). Reported against ``bare`` and ``bare_c``;
  no target.
- ``hybrid_wb``: ``hybrid`` with ``--write-back-ttl 2s``: the 500 unseen rows, once computed, are
  written back to the store (beside its versions) and answered from there until they are 2 s old
  (they stay in the workload's ``store.db``, in its write-back table, never in a version; a server
  with a TTL of 2 s takes none older). Against ``bare`` and ``bare_c``; no target.
- ``dynamic_mon``, ``dynamic_nomon``, ``static_mon``, ``static_nomon``: the cost of data monitoring
  (issue 14), run only when named. ``dynamic_mon`` is ``dynamic`` with ``--reference catalogue.parquet``
  (drift watched as ``augury serve`` does by default: every request up to 1,000 a second), ``static_mon``
  is ``static`` (its predictions watched against the active version's profile); each ``_nomon`` is the
  same server with ``--monitor-sample 0``, and each ``_mon`` is reported against it. Target: >= 0.9.
- ``static_nomemo``: ``static`` with ``--lookup-memo-mib 0``: every lookup reads the store (the server
  otherwise keeps each key's encoded answer for the active version; it fills as keys are first asked, so
  give a ``--warmup`` long enough to ask most of the 100,000 keys, e.g. 12 s). Against ``bare_get``; run
  only when named.
- ``dynamic_v2``: dynamic mode, the body of ``bare_v2``. Reported against ``bare_v2`` and ``bare_v2_c``;
  no target.

Peers (optional; model-serving peers: MLServer, BentoML, Ray Serve and naive per-request servers, each
from its own venv under ``--peer-venvs`` [/tmp/bench/venvs], with the same model, the same wrk settings
and in the same round as the bare endpoints they are divided by). A peer whose venv is missing is
reported as skipped, with the reason, and the run goes on. The peer scripts are in ``benchmarks/peers/``:

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

    bash benchmarks/peers/setup_envs.sh    # -> /tmp/bench/venvs/{base,mlserver,bentoml,ray}

The workload is built once under /tmp/augury-bench/http (``--work``) with augury's own API: a
HistGradientBoostingClassifier (100 iterations, features f0..f19) trained on 200k rows of
make_classification, a 100k-row catalogue with an ``id`` column scored by `augury.batch.run_batch`, and
published by `augury.publish.publish_predictions` to a SQLite store.

wrk scripts: ``benchmarks/wrk/post.lua`` (one body), ``post_random.lua`` (a random body per request),
``get_random.lua`` (a random key per request), ``get_zipf.lua`` (a Zipf-drawn key per request); each
prints a ``WRKJSON {...}`` summary line. The random scripts format every request once at start-up, so the
bare and augury systems they compare pay the same per-request cost in wrk. Server logs go to
<work>/logs/; the report ends with the problems seen (failed starts with their stderr tail, wrong check
answers, non-2xx, error lines in the log, slow start or stop).
``--serve-args`` passes extra options to every ``augury serve`` (e.g. ``'--max-delay-ms 0'``).

The code is in `httpbench/` (workload, systems, checks, peers, servers, wrk, measure, report); this file
is the command line.

The run reported in the issue (about 4 minutes; the first run adds a few seconds to build the workload):

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
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # httpbench, and bare_server for its constants, wherever this is run from

from httpbench.measure import run_system  # noqa: E402
from httpbench.peers import prepare_peers  # noqa: E402
from httpbench.report import markdown, server_notes, summarize, write_json  # noqa: E402
from httpbench.systems import systems as all_systems  # noqa: E402
from httpbench.workload import PEER_VENVS, WORK, prepare, publish_to_redis  # noqa: E402
from redis_local import local_redis  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    systems = all_systems()
    own = [n for n, s in systems.items() if s.peer is None and not s.redis and s.default]
    peers = [n for n, s in systems.items() if s.peer is not None]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default=",".join(own),
                    help=f"comma-separated; default: {','.join(own)}; 'all' adds the peers {','.join(peers)}")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per system [10]")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections [32]")
    ap.add_argument("--workers", type=int, default=1,
                    help="server processes of every own system, augury's and the bare endpoints' [1]")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk threads [1]")
    ap.add_argument("--rounds", type=int, default=1, help="rounds; even rounds run in reverse order [1]")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of discarded load first [3]")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="seconds a server has to answer [60]")
    ap.add_argument("--work", type=Path, default=WORK, help=f"workload and logs folder [{WORK}]")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the workload even if it exists")
    ap.add_argument("--serve-args", default="",
                    help="extra arguments for every `augury serve`, e.g. --serve-args='--max-delay-ms 0'")
    ap.add_argument("--peer-venvs", type=Path, default=PEER_VENVS,
                    help=f"the peers' venvs (benchmarks/peers/setup_envs.sh) [{PEER_VENVS}]")
    ap.add_argument("--server-cpus", default="",
                    help="pin every server to these CPUs (taskset -c list, e.g. 1): with --wrk-cpus, wrk and "
                         "the server stop sharing cores, as on a machine with cores to spare [not pinned]")
    ap.add_argument("--wrk-cpus", default="",
                    help="pin wrk to these CPUs (taskset -c list, e.g. 0) [not pinned]")
    ap.add_argument("--out", type=Path, help="write every record and the summary to this JSON file")
    ap.add_argument("--redis", default=None,
                    help="a Redis URL (its database is emptied!) or 'local' (a private redis-server): "
                         "publish the catalogue there too, for the systems served from it (static_redis)")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.systems.split(",") if s.strip()]
    if names == ["all"]:
        names = list(systems)
    unknown = [n for n in names if n not in systems]
    if unknown:
        ap.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(systems)}")
    if shutil.which("wrk") is None:
        ap.error("wrk is not on PATH")
    needs_redis = [n for n in names if systems[n].redis]
    if needs_redis and not args.redis:
        ap.error(f"{', '.join(needs_redis)} need(s) --redis URL or --redis local")
    with contextlib.ExitStack() as stack:
        if args.redis:
            url = stack.enter_context(local_redis()) if args.redis == "local" else args.redis
            args.redis_url = url
        return run(args, names, systems)


def run(args: argparse.Namespace, names: list[str], systems: dict[str, Any]) -> int:
    w = prepare(args.work, args.rebuild)
    if getattr(args, "redis_url", None):
        w = publish_to_redis(w, args.redis_url)
    args.peer_problem = None
    if any(systems[n].peer is not None for n in names):
        args.peer_problem = prepare_peers(w, args.peer_venvs)
    recs = []
    for round_no in range(1, args.rounds + 1):
        order = names if round_no % 2 else names[::-1]
        print(f"== round {round_no}: {', '.join(order)} (c={args.connections}, {args.duration:g} s, "
              f"{args.workers} worker(s))",
              flush=True)
        for name in order:
            recs.append(run_system(systems[name], w, args, round_no))
    rows = summarize(recs, systems, names)
    table = markdown(rows)
    print(f"\nwrk -t{args.wrk_threads} -c{args.connections} -d{args.duration:g}s --timeout 10s --latency; "
          f"{args.workers} server process(es) per system; "
          f"{args.rounds} round(s), medians; 'x bare' = req/s / the named bare endpoint's req/s "
          f"in the same round; 'same protocol' = the bare endpoint served with augury's "
          f"AuguryHttpProtocol; {os.cpu_count()} CPUs\n")
    print(table)
    skipped = {r["system"]: r["skipped"] for r in recs if "skipped" in r}
    if skipped:
        print("\nSkipped:\n" + "\n".join(f"- {n}: {why}" for n, why in skipped.items()))
    notes = server_notes(recs)
    if notes:
        print("\nServer problems seen:\n" + "\n".join(f"- {n}" for n in notes))
    failed = [r for r in recs if "error" in r]
    if args.out:
        write_json(args.out, w, skipped, rows, recs, table, notes)
        print(f"\nresults -> {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
