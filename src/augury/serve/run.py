"""Running the server: open the model and the store, build the app, hand it to uvicorn.

With one worker the app is built in this process and served by a `uvicorn.Server`, so a bad model or
store URL fails before anything binds. With ``workers > 1`` the model and store are first opened once
here (to fail fast with a clear message), then uvicorn starts that many processes, each building its own
app with `app_from_env` from the `LaunchConfig` passed in the environment (`settings.CONFIG_ENV`): each
process holds its own model copy, batcher, store connections (and in-process write-backs); their metrics are
added up through a temporary directory (`monitor.sharing`), so any worker's ``/metrics`` gives the
server's totals.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import gc
import inspect
import logging
import math
import os
import socket
import sys
import tempfile
from typing import Any

import orjson
from starlette.applications import Starlette

from augury.errors import ConfigError, MissingExtraError
from augury.models import Model, load_model
from augury.serve.app import check_parts, create_app
from augury.serve.settings import CONFIG_ENV, LaunchConfig, ServeSettings
from augury.store import PredictionStore, open_store

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def open_parts(config: LaunchConfig) -> tuple[Model | None, PredictionStore | None]:
    """Load the model and open the store the config names (either may be None)."""
    s = config.settings
    model = (load_model(config.model_ref, name=s.name, threads=s.model_threads, evaluator=s.evaluator)
             if config.model_ref else None)
    store = open_store(config.store_url, create=False) if config.store_url else None  # only publish creates
    return model, store


def build_app(config: LaunchConfig) -> Starlette:
    """The app for `config`; it closes the store when it shuts down.

    Then every object alive (the model, the libraries) is frozen out of the garbage collector's reach
    (`gc.freeze`): full collections otherwise walk them all, and measured on 2 cores with 32 clients
    they made the p99 latency of one-row requests 51 ms instead of 6 ms. This process is the server's,
    so the process-wide setting is ours to make (`create_app` itself leaves the collector alone).
    """
    model, store = open_parts(config)
    try:
        app = create_app(config.settings, model, store, on_close=store.close if store is not None else None)
    except BaseException:
        if store is not None:
            store.close()
        raise
    gc.collect()
    gc.freeze()
    return app


def app_from_env() -> Starlette:
    """The app factory uvicorn's worker processes call (``augury.serve.run:app_from_env``)."""
    config = LaunchConfig.from_env()
    configure_logging(config.log_level, config.log_format)
    http_protocol(config.settings, config.probe_port)  # this worker's connections' time limits
    return build_app(config)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Send augury's logs (access, alert and error lines included) to stderr at `level`, as text or as
    one JSON object a line (`JsonLines`)."""
    logger = logging.getLogger("augury")
    logger.setLevel(level.upper())
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler(sys.stderr))
        logger.propagate = False
    for handler in logger.handlers:
        handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter(_FORMAT))


class JsonLines(logging.Formatter):
    """``--log-format json``: each record as one JSON object: ``time`` (ISO 8601, UTC), ``level``,
    ``logger`` and ``message``; a message that is itself a JSON object (an access line, an alert) is
    merged in as its fields instead, so a log shipper reads them without parsing twice; a traceback is
    under ``exc_info``."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname, "logger": record.name}
        fields = _json_object(message)
        if fields is None:
            line["message"] = message
        else:
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def serve(config: LaunchConfig) -> None:
    """Serve until interrupted (SIGINT/SIGTERM: finish the requests in flight, then stop)."""
    try:
        import uvicorn
    except ModuleNotFoundError as exc:
        raise MissingExtraError("serving over HTTP", "serve", exc.name or "uvicorn") from exc

    configure_logging(config.log_level, config.log_format)
    http = http_protocol(config.settings, config.probe_port)
    try:
        if config.workers == 1:
            app = build_app(config)
            _check_port(config.host, config.port)
            sockets = _probe_sockets(config)
            _announce(config)
            server = uvicorn.Server(uvicorn.Config(
                app, host=config.host, port=config.port, log_level=config.log_level,
                access_log=False, lifespan="on", server_header=False, http=http,
                ws="none", timeout_keep_alive=math.ceil(config.settings.keep_alive_s)))
            server.run(sockets=sockets)
            started = server.started
        else:
            model, store = open_parts(config)  # fail fast, in this process, with a clear message
            try:
                check_parts(config.settings, model, store)
            finally:
                if store is not None:
                    store.close()
            del model
            _check_port(config.host, config.port)
            sockets = _probe_sockets(config)
            _announce(config)
            with tempfile.TemporaryDirectory(prefix="augury-metrics-") as shared:
                settings = dataclasses.replace(config.settings, metrics_dir=shared)
                os.environ[CONFIG_ENV] = dataclasses.replace(config, settings=settings).to_json()
                options: dict[str, Any] = dict(
                    factory=True, workers=config.workers, host=config.host, port=config.port,
                    log_level=config.log_level, access_log=False, lifespan="on", server_header=False,
                    http=http, ws="none", timeout_keep_alive=math.ceil(config.settings.keep_alive_s))
                if sockets is None:
                    uvicorn.run("augury.serve.run:app_from_env", **options)
                else:  # as uvicorn.run starts its workers, with both sockets
                    from uvicorn.supervisors import Multiprocess

                    workers_config = uvicorn.Config("augury.serve.run:app_from_env", **options)
                    extra: dict[str, Any] = {}
                    if "target" in inspect.signature(Multiprocess).parameters:  # uvicorn < 0.30 takes the
                        extra["target"] = uvicorn.Server(workers_config).run  # workers' entry point
                    Multiprocess(workers_config, sockets=sockets, **extra).run()
            started = True
    except SystemExit as exc:  # uvicorn exits when it cannot bind; its log line says why
        raise ConfigError(f"could not serve on {config.host}:{config.port} (see the message above)") from exc
    if not started:
        raise ConfigError(f"could not serve on {config.host}:{config.port} (see the message above)")


def http_protocol(settings: ServeSettings | None = None, probe_port: int | None = None) -> Any:
    """uvicorn's ``http=`` setting for augury: its own protocol (`protocol.AuguryHttpProtocol`: httptools
    parsing, one write per response), configured with `settings`' time limits and the probe port, or
    uvicorn's own choice (h11) where httptools is not installed (which has no probe port)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        if probe_port is not None:
            raise MissingExtraError("a probe port (--probe-port)", "serve", "httptools") from None
        return "auto"
    from augury.serve.protocol import AuguryHttpProtocol

    if settings is not None:
        AuguryHttpProtocol.configure(header_timeout=settings.header_timeout_s,
                                     body_timeout=settings.body_timeout_s,
                                     probe_ports=() if probe_port is None else (probe_port,))
    return AuguryHttpProtocol


def _probe_sockets(config: LaunchConfig) -> list[socket.socket] | None:
    """With a probe port, the serving socket and the probe socket, bound here (uvicorn listens on both,
    in every worker, and augury's protocol tells their connections apart by port); else None (uvicorn
    binds the serving port itself)."""
    if config.probe_port is None:
        return None
    return [_bind(config.host, config.port), _bind(config.host, config.probe_port)]


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` as uvicorn binds one (``SO_REUSEADDR``, inheritable by workers);
    one clear line if it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(f"cannot serve on {host}:{port}: {why}") from None
    sock.set_inheritable(True)
    return sock


def _check_port(host: str, port: int) -> None:
    """Fail with one clear line if `host`:`port` cannot be bound (taken, or not an address of this
    machine), before anything says it is serving there. uvicorn binds it a moment later."""
    _bind(host, port).close()


def _announce(config: LaunchConfig) -> None:
    """Say what is being served, once the model and store have opened (so never before an error)."""
    probes = "" if config.probe_port is None else f", probes and /metrics also on port {config.probe_port}"
    print(f"augury: serving ({config.mode} mode) on http://{config.host}:{config.port} with "
          f"{config.workers} worker(s){probes}  (Ctrl-C to stop)", file=sys.stderr, flush=True)
