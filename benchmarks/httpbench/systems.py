"""The systems table: what each system is, the command that serves it, what wrk sends it, how its answer
is checked, and the bare endpoints its req/s is divided by.

A system's ``baseline`` is the bare endpoint of the issue's definition (`bare_server.py` on uvicorn's
plain httptools protocol); ``same_protocol`` is that bare endpoint served with the HTTP protocol
``augury serve`` uses (``bare_server.py --coalesce``: `augury.serve.protocol.AuguryHttpProtocol`,
one socket write per response), so augury's own cost is measured on the very same HTTP stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .checks import ONNX_TOLERANCE, TOLERANCE, Check, body, equal, proba, proba_only
from .peers import Peer, bentoml_peer, mlserver_peer, ray_peer, uvicorn_peer
from .workload import LOOKUP, V1, V2, Workload
from .wrk import Load

#: the Zipf exponent of ``static_zipf``'s keys, and how many draws `wrk/get_zipf.lua` formats at start-up.
ZIPF_S = 1.1
ZIPF_DRAWS = 200_000


@dataclass(frozen=True)
class Target:
    min_ratio: float
    max_p99_ms: float | None = None

    def text(self) -> str:
        return f">= {self.min_ratio:g}x" + (f", p99 < {self.max_p99_ms:g} ms" if self.max_p99_ms else "")

    def meets(self, ratio: float, p99_ms: float) -> bool:
        return ratio >= self.min_ratio and (self.max_p99_ms is None or p99_ms < self.max_p99_ms)


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
    #: the bare system of the same kind served with augury's HTTP protocol: a second ratio, same target.
    same_protocol: str | None = None
    #: extra arguments of `bare_server.py` (when `serve_args` is None).
    bare_args: tuple[str, ...] = ()
    #: served from the Redis store ({redis}): runs only with ``http_bench.py --redis``
    redis: bool = False
    #: in the default list of ``http_bench.py --systems`` (the monitoring pairs are run when named)
    default: bool = True


def systems() -> dict[str, System]:
    """Every system by name, augury's own first (the default list), then the peers."""
    import bare_server  # benchmarks/ is on sys.path: http_bench.py's folder

    model, store, coalesce = ("--model", "{model}"), ("--store", "{store}"), ("--coalesce",)
    post_v1, post_v2 = Load("post.lua", V1, "body_v1"), Load("post.lua", V2, "body_v2")
    get_keys = Load("get_random.lua", "/", "keys")
    get_zipf = Load("get_zipf.lua", "/", "keys", (("ZIPF_S", f"{ZIPF_S:g}"), ("ZIPF_DRAWS", str(ZIPF_DRAWS))))

    def v1_constant(w: Workload) -> list[Check]:
        return [Check("POST", V1, body(w.body_v1), equal(bare_server.PREDICT))]

    def lookup_constant(w: Workload) -> list[Check]:
        return [Check("GET", LOOKUP + w.meta["key_check"], None, equal(bare_server.LOOKUP))]

    def v2_constant(w: Workload) -> list[Check]:
        return [Check("POST", V2, body(w.body_v2), equal(bare_server.INFER))]

    def lookup_static(w: Workload) -> list[Check]:
        return [Check("GET", LOOKUP + w.meta["key_check"], None, proba(w, "key", "static"))]

    same = "served with augury's HTTP protocol, AuguryHttpProtocol (one socket write per response)"
    own = [
        System("bare", "bare endpoint: POST v1 one-row body, parse JSON, constant answer", None, post_v1,
               v1_constant, "bare"),
        System("bare_c", f"bare, {same}", None, post_v1, v1_constant, "bare", bare_args=coalesce),
        System("bare_get", "bare endpoint: GET a random published key, constant answer", None, get_keys,
               lookup_constant, "bare_get"),
        System("bare_get_c", f"bare_get, {same}", None, get_keys, lookup_constant, "bare_get",
               bare_args=coalesce),
        System("bare_v2", "bare endpoint: POST v2 [1,20] FP64 tensor, parse JSON, constant answer", None,
               post_v2, v2_constant, "bare_v2"),
        System("bare_v2_c", f"bare_v2, {same}", None, post_v2, v2_constant, "bare_v2", bare_args=coalesce),
        System("dynamic", "augury serve --model: POST v1 one-row body", model, post_v1,
               lambda w: [Check("POST", V1, body(w.body_v1), proba(w, "v1", "dynamic"))],
               "bare", Target(0.6, 20.0), same_protocol="bare_c"),
        System("static", "augury serve --store: GET a random published key", store, get_keys,
               lookup_static, "bare_get", Target(0.95), same_protocol="bare_get_c"),
        System("static_redis", "augury serve --store redis://... (the same catalogue in a local "
               "redis-server): GET a random published key", ("--store", "{redis}"), get_keys, lookup_static,
               "bare_get", same_protocol="bare_get_c", redis=True),
        System("static_zipf", f"augury serve --store: GET a published key drawn from Zipf(s={ZIPF_S:g}) "
               "over the 100,000 keys", store, get_zipf, lookup_static, "bare_get",
               same_protocol="bare_get_c"),
        System("hybrid", "augury serve --model --store: POST v1, half published keys, half unseen rows",
               (*model, *store), Load("post_random.lua", V1, "hybrid_bodies"),
               lambda w: [Check("POST", V1, w.meta["keyed_body"], proba(w, "key", "static")),
                          Check("POST", V1, w.meta["unseen_body"], proba(w, "unseen", "dynamic"))],
               "bare", same_protocol="bare_c"),
        System("hybrid_wb", "hybrid with --write-back-ttl 2s: the unseen rows, once computed, are written "
               "back to the store and answered from it until they are 2 s old",
               (*model, *store, "--write-back-ttl", "2s"), Load("post_random.lua", V1, "hybrid_bodies"),
               lambda w: [Check("POST", V1, w.meta["keyed_body"], proba(w, "key", "static")),
                          Check("POST", V1, w.meta["unseen_body"], proba(w, "unseen", "dynamic"))],
               "bare", same_protocol="bare_c"),
        # the cost of data monitoring (issue 14): each _mon system is divided by its _nomon twin, which
        # is the same server with the monitor off (--monitor-sample 0); the dynamic one watches drift
        # against the catalogue the model scored (without a reference a dynamic server watches nothing)
        System("dynamic_mon", "dynamic with drift monitoring on (default sampling, --reference the "
               "catalogue)", (*model, "--reference", "catalogue.parquet"), post_v1,
               lambda w: [Check("POST", V1, body(w.body_v1), proba(w, "v1", "dynamic"))],
               "dynamic_nomon", Target(0.9), default=False),
        System("dynamic_nomon", "dynamic with monitoring off (--monitor-sample 0)",
               (*model, "--monitor-sample", "0"), post_v1,
               lambda w: [Check("POST", V1, body(w.body_v1), proba(w, "v1", "dynamic"))], "bare",
               default=False),
        System("static_mon", "static with monitoring on as by default (drift of the predictions against "
               "the active version's profile)", store, get_keys, lookup_static, "static_nomon", Target(0.9),
               default=False),
        System("static_nomon", "static with monitoring off (--monitor-sample 0)",
               (*store, "--monitor-sample", "0"), get_keys, lookup_static, "bare_get", default=False),
        # issue 9: static with its kept answers off (every lookup reads the store, builds and encodes)
        System("static_nomemo", "static with --lookup-memo-mib 0 (no answers kept encoded)",
               (*store, "--lookup-memo-mib", "0"), get_keys, lookup_static, "bare_get", default=False),
        System("dynamic_v2", "augury serve --model: POST v2 [1,20] FP64 tensor", model, post_v2,
               lambda w: [Check("POST", V2, body(w.body_v2), proba(w, "v1", "dynamic"))],
               "bare_v2", same_protocol="bare_v2_c"),
    ]
    # the model-serving peers, each from its own venv (see `Peer`); the same model, same row
    features = Load("post.lua", "/predict", "body_features")

    def features_proba(tolerance: float) -> Callable[[Workload], list[Check]]:
        return lambda w: [Check("POST", "/predict", body(w.body_features), proba_only(w, tolerance))]

    peers = [
        System("naive", "peer: Starlette async endpoint, sklearn predict_proba per request, features body",
               None, features, features_proba(TOLERANCE), "bare",
               peer=Peer("base", "python", uvicorn_peer("naive"))),
        System("naive_onnx", "peer: Starlette async endpoint, onnxruntime per request, features body",
               None, features, features_proba(ONNX_TOLERANCE), "bare",
               peer=Peer("base", "python", uvicorn_peer("onnx"))),
        System("mlserver_b32", "peer: MLServer 1.7.1 sklearn runtime, 1 process, adaptive batching "
               "32 / 2 ms, v2 body", None, post_v2,
               lambda w: [Check("POST", V2, body(w.body_v2), proba_only(w, TOLERANCE))],
               "bare_v2", peer=Peer("mlserver", "mlserver", mlserver_peer(32, 0.002))),
        System("bentoml_batch", "peer: BentoML 1.4 1 worker, batchable API max_batch_size 64, features body",
               None, features, features_proba(TOLERANCE), "bare",
               peer=Peer("bentoml", "bentoml", bentoml_peer(64))),
        System("ray_batch", "peer: Ray Serve 2.60, 1 replica, @serve.batch 32 / 2 ms, features body",
               None, features, features_proba(TOLERANCE), "bare",
               peer=Peer("ray", "python", ray_peer(32, 0.002))),
    ]
    return {s.name: s for s in [*own, *peers]}
