"""The server's settings: every knob with its default, checked once, and carried to worker processes.

`ServeSettings` is what `create_app` needs (limits, batching, write-back). `LaunchConfig` adds what a
launcher needs to build the app itself (the model and store references, host, port, workers): with
``--workers N`` each uvicorn worker process rebuilds the app from it, passed as JSON in the environment
variable `CONFIG_ENV` (see `augury.serve.run`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from augury.errors import ConfigError
from augury.models import evaluator as evaluators

#: the environment variable that carries a `LaunchConfig` to uvicorn worker processes.
CONFIG_ENV = "AUGURY_SERVE_CONFIG"
MIB = 1 << 20


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches, limits and caches. Every value has a default that suits one machine."""

    #: the model's name in URLs; None: the model's own name (manifest name or file stem), in static
    #: mode the name the predictions were published under.
    name: str | None = None
    #: most rows the batcher sends to the model in one call.
    max_batch_size: int = 64
    #: how long a batch waits for more requests after its first one, in milliseconds. 0 (the default)
    #: still batches under load: requests arriving while the model is busy form the next batch.
    max_delay_ms: float = 0.0
    #: a model whose recent batches took less than this (milliseconds) is called on the event loop's
    #: thread instead of the model thread: the hand-off costs more than such a model (`serve.batcher`).
    #: 0: always on the model thread.
    inline_below_ms: float = 0.5
    #: most requests waiting for the model; past it requests get 503 with Retry-After.
    max_queue: int = 1024
    #: most requests being handled at once (reading their body, waiting, being scored, answering); past
    #: it new requests get 503 with Retry-After at once. With max_body_bytes it bounds the memory that
    #: request bodies can take (max_in_flight x max_body_bytes).
    max_in_flight: int = 512
    #: largest request body accepted (413 past it), checked from Content-Length and while reading.
    max_body_bytes: int = 8 * MIB
    #: most instances (rows) in one request (413 past it).
    max_instances: int = 4096
    #: accept and ignore fields that are not model features (default: 400 naming them).
    ignore_unknown_fields: bool = False
    #: reuse dynamic predictions for this many seconds (None: no write-back; `serve.writeback`).
    write_back_ttl_s: float | None = None
    #: where to keep them: "store" (beside the store's versions) or "process" (an in-process cache);
    #: None: the store if the server has one, else the process.
    write_back_to: Literal["store", "process"] | None = None
    #: most entries in the in-process write-back cache (least recently used ones are evicted).
    write_back_max_entries: int = 100_000
    #: seconds a connection may wait for its next request (its first included) before it is closed
    #: (uvicorn takes whole seconds: rounded up).
    keep_alive_s: float = 5.0
    #: seconds a request's head may take to arrive, from its first byte (then 408; `serve.protocol`).
    header_timeout_s: float = 10.0
    #: seconds a request's body may take to arrive, from the end of its head (then 408).
    body_timeout_s: float = 30.0
    #: MiB of encoded static answers kept per worker, by key, for the store version lookups answer from
    #: (`serve.lookup_memo`: an in-process store only); 0 turns it off.
    lookup_memo_mib: float = 64.0
    #: BLAS/OpenMP threads for the model (one-row calls stall with more on small machines).
    model_threads: int = 1
    #: which code scores the model (`augury.models.evaluator`: "auto", "compiled" or "library"): the same
    #: default as `augury batch`, so static and dynamic answers come from the same evaluator.
    evaluator: str = evaluators.DEFAULT
    #: hybrid: answer from the store only predictions made by the served model version.
    require_version_match: bool = False
    #: answer a key sent with features from what the store (or a write-back) holds for the key even when
    #: it was computed from other features (by default those are computed again: `serve.router`).
    trust_keys: bool = False
    #: serve a store whose active version records another model's name (static: the --name given;
    #: hybrid: the served model's name); by default that is refused at start (`app.check_store_model`).
    allow_name_mismatch: bool = False
    #: with several worker processes, the directory where each leaves its metrics for the others to add
    #: up (`monitor.sharing`); `augury serve --workers N` makes one. None: this process's metrics only.
    metrics_dir: str | None = None
    #: share of answered requests handed to the monitor's observers (drift, shadow checks), off the
    #: request's path (`monitor.tap`); 0 turns monitoring of the data off.
    monitor_sample: float = 1.0
    #: most answered requests waiting for the monitor's observers; past it new ones are dropped (and
    #: counted), never waited for.
    monitor_queue: int = 1024
    #: most answered requests per second handed to the monitor (an even sample in time past it; 0: no
    #: limit): bounds the monitor's cost on a busy server (`monitor.tap`).
    monitor_max_rate: float = 1000.0
    #: data the served inputs are compared with for drift (Parquet or CSV, e.g. the validation set);
    #: None: the model's manifest's ``reference``, else the store's active version (`monitor.reference`).
    reference: str | None = None
    #: the monitor's settings file (TOML: windows, drift limits, alerts; `monitor.config`); None: defaults.
    monitor_config: str | None = None
    #: seconds after its publication that the store's active version is stale (alert; `monitor.staleness`);
    #: None: no limit.
    max_staleness_s: float | None = None
    #: a URL every alert change is POSTed to as JSON (`monitor.webhook`); None: alerts are logged only.
    alert_webhook: str | None = None

    def __post_init__(self) -> None:
        positive = {
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
            "max_in_flight": self.max_in_flight,
            "max_body_bytes": self.max_body_bytes,
            "max_instances": self.max_instances,
            "write_back_max_entries": self.write_back_max_entries,
            "model_threads": self.model_threads,
            "monitor_queue": self.monitor_queue,
        }
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a whole number of at least 1, "
                                  f"not {value!r}")
        if not self.max_delay_ms >= 0:
            raise ConfigError(f"max-delay-ms must be 0 or more, not {self.max_delay_ms!r}")
        for name in ("keep_alive_s", "header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                option = name[:-2].replace("_", "-")
                raise ConfigError(f"{option} must be positive, not {getattr(self, name)!r}")
        if self.max_staleness_s is not None and not self.max_staleness_s > 0:
            raise ConfigError(f"max-staleness must be positive, not {self.max_staleness_s!r}")
        if not self.monitor_max_rate >= 0:
            raise ConfigError(f"monitor-max-rate must be 0 (no limit) or more, not {self.monitor_max_rate!r}")
        if not 0 <= self.monitor_sample <= 1:
            raise ConfigError(f"monitor-sample must be a share between 0 and 1, not {self.monitor_sample!r}")
        if not self.lookup_memo_mib >= 0:
            raise ConfigError(f"lookup-memo-mib must be 0 (off) or more, not {self.lookup_memo_mib!r}")
        if not self.inline_below_ms >= 0:
            raise ConfigError(f"inline-below-ms must be 0 or more, not {self.inline_below_ms!r}")
        if self.write_back_ttl_s is not None and not self.write_back_ttl_s > 0:
            raise ConfigError(f"write-back-ttl must be positive, not {self.write_back_ttl_s!r}")
        if self.write_back_to not in (None, "store", "process"):
            raise ConfigError(f"write-back-to must be 'store' or 'process', not {self.write_back_to!r}")
        if self.write_back_to is not None and self.write_back_ttl_s is None:
            raise ConfigError("write-back-to says where to keep write-backs; give --write-back-ttl too")
        evaluators.check_choice(self.evaluator)
        if self.name is not None and (not self.name or "/" in self.name):
            raise ConfigError(f"model name {self.name!r} must be non-empty and contain no '/'")


@dataclass(frozen=True)
class LaunchConfig:
    """Everything `augury serve` was asked for: what to serve, where, with how many processes."""

    model_ref: str | None = None
    store_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    settings: ServeSettings = field(default_factory=ServeSettings)
    #: "text" or "json" (one JSON object a line: `run.JsonLines`)
    log_format: str = "text"
    #: a second port on `host` that answers only the probes and the metrics scrape (`serve.protocol`):
    #: under overload they then never wait behind the clients' connections. None: none.
    probe_port: int | None = None

    def __post_init__(self) -> None:
        if self.model_ref is None and self.store_url is None:
            raise ConfigError("give a model (--model), a prediction store (--store), or both")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, not {self.port}")
        probe = self.probe_port
        if probe is not None and not (1 <= probe <= 65535 and probe != self.port):
            raise ConfigError(f"probe port must be between 1 and 65535 and not the serving port, not "
                              f"{self.probe_port}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, not {self.workers}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log format must be 'text' or 'json', not {self.log_format!r}")

    @property
    def mode(self) -> str:
        return mode_of(self.model_ref is not None, self.store_url is not None)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LaunchConfig:
        try:
            data: dict[str, Any] = json.loads(text)
            settings = ServeSettings(**data.pop("settings"))
            return cls(**data, settings=settings)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"bad {CONFIG_ENV}: {exc}") from exc

    @classmethod
    def from_env(cls) -> LaunchConfig:
        text = os.environ.get(CONFIG_ENV)
        if not text:
            raise ConfigError(f"{CONFIG_ENV} is not set; start the server with `augury serve`")
        return cls.from_json(text)


def mode_of(has_model: bool, has_store: bool) -> str:
    """'hybrid' with both, 'dynamic' with a model alone, 'static' with a store alone."""
    if has_model and has_store:
        return "hybrid"
    if has_model:
        return "dynamic"
    if has_store:
        return "static"
    raise ConfigError("give a model, a prediction store, or both")

