"""`augury serve`: the HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from augury.config import parse_duration
from augury.errors import ConfigError

from ._common import evaluator_option, reporting


@click.command()
@click.option(
    "--model",
    "model_ref",
    default=None,
    metavar="PATH",
    help="Model file or module:function to compute predictions with (dynamic or hybrid).",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    metavar="URL",
    help="Prediction store to answer from: sqlite:///path.db (static or hybrid).",
)
@click.option("--name", default=None, help="Model name in URLs [manifest name, else file stem].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--probe-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Also answer health probes and /metrics (only those) on this port, so that under overload "
    "they never wait behind the clients' connections.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes (each loads its own copy of the model).",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Most rows per model call.",
)
@click.option(
    "--max-delay-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="How long a batch waits for more requests (under load batches form anyway).",
)
@click.option(
    "--inline-below-ms",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Call a model whose recent batches took less than this on the event loop's thread "
    "(no hand-off to the model thread); 0: always on the model thread.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Requests waiting for the model before new ones get 503.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=512,
    show_default=True,
    help="Requests handled at once before new ones get 503 (bounds memory with --max-body-bytes).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1),
    default=8 << 20,
    show_default=True,
    help="Largest request body (413 past it).",
)
@click.option(
    "--max-instances",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Most instances (rows) per request (413 past it).",
)
@click.option("--ignore-unknown-fields", is_flag=True, help="Ignore fields that are not model features.")
@click.option(
    "--keep-alive-timeout",
    default="5s",
    show_default=True,
    metavar="DURATION",
    help="Close a connection that sends no request for this long.",
)
@click.option(
    "--header-timeout",
    default="10s",
    show_default=True,
    metavar="DURATION",
    help="A request's head must arrive within this, from its first byte (else 408).",
)
@click.option(
    "--body-timeout",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="A request's body must arrive within this, from the end of its head (else 408).",
)
@click.option(
    "--write-back-ttl",
    default=None,
    metavar="DURATION",
    help="Reuse dynamic predictions for this long, e.g. 10m (kept where --write-back-to says).",
)
@click.option(
    "--write-back-to",
    type=click.Choice(["store", "process"]),
    default=None,
    help="Keep write-backs in the store, shared by every worker (default with --store), or in each "
    "process's memory (default without).",
)
@click.option(
    "--require-version-match",
    is_flag=True,
    help="Hybrid: answer from the store only predictions of the served model version.",
)
@click.option(
    "--trust-keys",
    is_flag=True,
    help="Answer a key sent with features from the store even when its prediction was computed from "
    "other features (by default those are computed again: hybrid, or refused: static).",
)
@click.option(
    "--allow-name-mismatch",
    is_flag=True,
    help="Serve a store whose active version records another model's name (refused by default).",
)
@click.option(
    "--model-threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="BLAS/OpenMP threads for the model.",
)
@evaluator_option
@click.option(
    "--reference",
    default=None,
    metavar="DATA",
    help="Data the served inputs should look like (Parquet or CSV, e.g. the validation set): the "
    "reference for drift [the model manifest's, else the store's active version's profiles].",
)
@click.option(
    "--monitor-config",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="TOML",
    help="Drift windows and alert limits (see docs/monitor.md).",
)
@click.option(
    "--max-staleness",
    default=None,
    metavar="DURATION",
    help="Alert when the store's active version was published longer ago than this, e.g. 1d.",
)
@click.option(
    "--alert-webhook",
    default=None,
    metavar="URL",
    help="POST every alert (drift, staleness, shadow) as JSON to this URL, retried with backoff.",
)
@click.option(
    "--monitor-sample",
    type=click.FloatRange(0, 1),
    default=1.0,
    show_default=True,
    help="Share of answered requests the monitor looks at (0: none).",
)
@click.option(
    "--monitor-max-rate",
    type=click.FloatRange(min=0),
    default=1000.0,
    show_default=True,
    help="Most requests per second the monitor looks at (an even sample past it; 0: no limit).",
)
@click.option(
    "--monitor-queue",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Requests waiting for the monitor before new ones are dropped from it (never from serving).",
)
@click.option(
    "--lookup-memo-mib",
    type=click.FloatRange(min=0),
    default=64.0,
    show_default=True,
    help="MiB of encoded answers to key lookups kept per worker for the active version (0: off).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="debug logs one line per request.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one JSON object a line (access lines and alerts as their fields).",
)
@reporting
def serve(
    model_ref: str | None,
    store_url: str | None,
    name: str | None,
    host: str,
    port: int,
    probe_port: int | None,
    workers: int,
    max_batch_size: int,
    max_delay_ms: float,
    inline_below_ms: float,
    max_queue: int,
    max_in_flight: int,
    max_body_bytes: int,
    max_instances: int,
    ignore_unknown_fields: bool,
    keep_alive_timeout: str,
    header_timeout: str,
    body_timeout: str,
    write_back_ttl: str | None,
    write_back_to: Literal["store", "process"] | None,  # click.Choice checked it
    require_version_match: bool,
    trust_keys: bool,
    allow_name_mismatch: bool,
    model_threads: int,
    evaluator: str,
    reference: str | None,
    monitor_config: str | None,
    max_staleness: str | None,
    alert_webhook: str | None,
    monitor_sample: float,
    monitor_max_rate: float,
    monitor_queue: int,
    lookup_memo_mib: float,
    log_level: str,
    log_format: str,
) -> int:
    """Serve predictions over HTTP: from a store (static), a model (dynamic), or both (hybrid)."""
    from augury.serve.settings import LaunchConfig, ServeSettings

    settings = ServeSettings(
        name=name,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        inline_below_ms=inline_below_ms,
        max_queue=max_queue,
        max_in_flight=max_in_flight,
        max_body_bytes=max_body_bytes,
        max_instances=max_instances,
        ignore_unknown_fields=ignore_unknown_fields,
        keep_alive_s=parse_duration(keep_alive_timeout, "--keep-alive-timeout"),
        header_timeout_s=parse_duration(header_timeout, "--header-timeout"),
        body_timeout_s=parse_duration(body_timeout, "--body-timeout"),
        write_back_ttl_s=parse_duration(write_back_ttl, "--write-back-ttl") if write_back_ttl else None,
        write_back_to=write_back_to,
        model_threads=model_threads,
        evaluator=evaluator,
        require_version_match=require_version_match,
        trust_keys=trust_keys,
        allow_name_mismatch=allow_name_mismatch,
        reference=str(Path(reference).resolve()) if reference else None,  # (workers start elsewhere)
        monitor_config=str(Path(monitor_config).resolve()) if monitor_config else None,
        monitor_sample=monitor_sample,
        monitor_queue=monitor_queue,
        lookup_memo_mib=lookup_memo_mib,
        monitor_max_rate=monitor_max_rate,
        max_staleness_s=parse_duration(max_staleness, "--max-staleness") if max_staleness else None,
        alert_webhook=alert_webhook,
    )
    if write_back_to == "store" and store_url is None:
        raise ConfigError("--write-back-to store needs a store (--store)")
    if store_url is not None:  # a server never creates a store: "no store at PATH" before anything loads
        from augury.store import open_store

        open_store(store_url, create=False).close()
    config = LaunchConfig(model_ref, store_url, host, port, workers, log_level, settings, log_format,
                          probe_port)
    from augury.serve.run import serve as run_server

    run_server(config)
    return 0
