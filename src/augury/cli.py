"""The `augury` command line. It wires the core together and translates; it does no work of its own.

Exit codes: 0 success; 1 a check failed (a verification gate, a refused publish, too many bad rows);
2 an error (bad input, missing file, bad option); 130 interrupted. With `--json`, a command prints one
JSON document on stdout, an error included (`{"error": "..."}`); messages go to stderr.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from augury import console
from augury.config import Settings, parse_duration
from augury.errors import AuguryError, TooManyBadRows, VerificationFailed

F = TypeVar("F", bound=Callable[..., Any])
EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")


def _store_option(required: bool = False) -> Callable[[F], F]:
    return click.option(
        "--store",
        "store_url",
        default=None if not required else Settings.from_env().store,
        show_default=required,
        metavar="URL",
        help="Prediction store URL: sqlite:///path.db or memory://  (env AUGURY_STORE).",
    )


def reporting(fn: F) -> F:
    """Turn augury's errors into one readable message and an exit code (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        as_json = bool(kwargs.get("as_json"))
        try:
            return int(fn(*args, **kwargs) or 0)
        except VerificationFailed as exc:
            _show_failure(str(exc), as_json, exc.report)
            return EXIT_CHECK_FAILED
        except TooManyBadRows as exc:
            _show_failure(str(exc), as_json)
            return EXIT_CHECK_FAILED
        except AuguryError as exc:
            _show_failure(str(exc), as_json)
            return EXIT_ERROR

    return wrapper  # type: ignore[return-value]


def _show_failure(message: str, as_json: bool, report: Any = None) -> None:
    if as_json:
        doc: dict[str, Any] = {"error": message}
        if report is not None:
            doc["report"] = report.to_dict()
        console.print_json(doc)
    elif report is not None:
        console.out.print(report.render())
    console.err.print(f"augury: {message}", soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="augury")
def cli() -> None:
    """augury: static, dynamic and hybrid inference for trained models."""


@cli.command()
@click.argument("model")
@json_option
@reporting
def info(model: str, as_json: bool) -> int:
    """Describe MODEL (a model file or module:function): name, version, input and output schema."""
    from augury.models import load_model

    m = load_model(model)
    d = m.info.to_dict()
    if as_json:
        console.print_json(d)
        return 0
    console.out.print(f"[bold]{d['name']}[/] version {d['version']} ({d['format']}, {d['task']})")
    console.out.print(
        console.table(
            "inputs",
            ["name", "dtype", "missing allowed"],
            [(f["name"], f["dtype"], f["allow_missing"]) for f in d["inputs"]],
        )
    )
    console.out.print(
        console.table("outputs", ["name", "dtype"], [(f["name"], f["dtype"]) for f in d["outputs"]])
    )
    return 0


@cli.command()
@click.argument("model")
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Parquet file to write.")
@click.option(
    "--key",
    "keys",
    multiple=True,
    metavar="COL",
    help="Key column(s); default: a canonical hash of the feature values.",
)
@click.option("--chunk-rows", type=click.IntRange(min=1), default=None, help="Rows per chunk [32768].")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Worker processes [every core].")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same job.")
@click.option(
    "--engine",
    type=click.Choice(["auto", "processes", "threads", "inline"]),
    default="auto",
    show_default=True,
    help="Where work runs: worker processes (auto), threads in one process, or inline.",
)
@click.option(
    "--max-error-rate",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Fail when a larger share of rows cannot be scored.",
)
@click.option(
    "--errors",
    "errors_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where unscorable rows go [OUTPUT stem + .errors.jsonl].",
)
@click.option("--name", default=None, help="Model name (default: manifest name or file stem).")
@json_option
@reporting
def batch(
    model: str,
    input_path: str,
    output: str,
    keys: tuple[str, ...],
    chunk_rows: int | None,
    workers: int | None,
    resume: bool,
    engine: str,
    max_error_rate: float,
    errors_path: str | None,
    name: str | None,
    as_json: bool,
) -> int:
    """Score every row of INPUT (Parquet, CSV, JSON Lines; a file or a folder) with MODEL."""
    from augury.batch import BatchOptions, run_batch

    settings = Settings.from_env()
    options = BatchOptions(
        engine=engine,
        key_columns=keys,
        chunk_rows=chunk_rows or settings.chunk_rows,
        workers=workers or settings.workers or None,
        resume=resume,
        max_error_rate=max_error_rate,
        errors_path=Path(errors_path) if errors_path else None,
        model_name=name,
    )
    with console.ProgressReporter("scoring") as progress:
        result = run_batch(model, input_path, output, options, on_progress=progress)
    for note in result.notes:
        console.err.print(f"augury: {note}")
    if as_json:
        console.print_json(result.to_dict())
        return 0
    d = result.to_dict()
    console.out.print(
        console.table(
            f"batch: {result.model_name} {result.model_version}",
            ["", ""],
            [
                ("output", d["output"]),
                ("rows", f"{d['rows']:,}"),
                ("scored", f"{d['scored']:,}"),
                ("failed", f"{d['failed']:,}" + (f"  (see {d['errors_path']})" if d["failed"] else "")),
                ("seconds", d["seconds"]),
                ("rows/s", f"{d['rows_per_s']:,.0f}"),
                ("workers", d["workers"]),
                ("tasks resumed", d["resumed_tasks"]),
            ],
        )
    )
    return 0


@cli.command()
@click.argument("predictions")
@click.option("--checks", type=click.Path(dir_okay=False), default=None, help="TOML file of gate settings.")
@_store_option()
@json_option
@reporting
def verify(predictions: str, checks: str | None, store_url: str | None, as_json: bool) -> int:
    """Check PREDICTIONS against the gates; with --store, also against the active version (drift, count)."""
    from augury.verify import load_checks
    from augury.verify import verify as run_verify

    baseline = None
    if store_url:
        from augury.store import open_store

        store = open_store(store_url)
        try:
            baseline = store.active()
        finally:
            store.close()
    report = run_verify(predictions, load_checks(checks), baseline)
    if as_json:
        console.print_json(report.to_dict())
    else:
        console.out.print(report.render())
    return 0 if report.passed else EXIT_CHECK_FAILED


@cli.command()
@click.argument("predictions")
@_store_option(required=True)
@click.option("--checks", type=click.Path(dir_okay=False), default=None, help="TOML file of gate settings.")
@click.option(
    "--ttl", default=None, metavar="DURATION", help="Serve these predictions for at most this long."
)
@click.option("--no-activate", is_flag=True, help="Load the version but leave the active one as it is.")
@json_option
@reporting
def publish(
    predictions: str, store_url: str, checks: str | None, ttl: str | None, no_activate: bool, as_json: bool
) -> int:
    """Verify PREDICTIONS, then load them as a new store version and activate it atomically."""
    from augury.publish import publish_predictions
    from augury.store import open_store
    from augury.verify import load_checks

    ttl_s = parse_duration(ttl) if ttl else None
    store = open_store(store_url)
    try:
        result = publish_predictions(
            predictions, store, load_checks(checks), ttl_s=ttl_s, activate=not no_activate
        )
    finally:
        store.close()
    if as_json:
        console.print_json({"version": result.version.to_dict(), "report": result.report.to_dict()})
        return 0
    console.out.print(result.report.render())
    v = result.version
    state = "active" if v.active else "loaded, not active"
    console.out.print(
        f"published store version [bold]{v.version}[/] ({v.row_count:,} rows, model "
        f"{v.model_version}): {state}"
    )
    return 0


@cli.group()
def store() -> None:
    """Manage a prediction store: versions, activate, rollback, get, gc, delete."""


def _open(url: str | None) -> Any:
    from augury.store import open_store

    return open_store(url or Settings.from_env().store)


def _versions_table(versions: list[Any]) -> Any:
    return console.table(
        "store versions",
        ["version", "active", "state", "rows", "model version", "created"],
        [
            (
                v["store_version"],
                "*" if v["active"] else "",
                v["state"],
                f"{v['row_count']:,}",
                v["model_version"],
                v["created_at"],
            )
            for v in versions
        ],
    )


@store.command("versions")
@_store_option()
@json_option
@reporting
def store_versions(store_url: str | None, as_json: bool) -> int:
    """List every version, the active one marked."""
    s = _open(store_url)
    try:
        versions = [v.to_dict() for v in s.versions()]
    finally:
        s.close()
    if as_json:
        console.print_json({"versions": versions})
    else:
        console.out.print(_versions_table(versions))
    return 0


def _switch(store_url: str | None, as_json: bool, action: Callable[[Any], Any], verb: str) -> int:
    s = _open(store_url)
    try:
        v = action(s).to_dict()
    finally:
        s.close()
    if as_json:
        console.print_json(v)
    else:
        console.out.print(f"{verb} store version [bold]{v['store_version']}[/] (model {v['model_version']})")
    return 0


@store.command("rollback")
@_store_option()
@click.option("--to", "to", default=None, help="Version to activate [the one before the active].")
@json_option
@reporting
def store_rollback(store_url: str | None, to: str | None, as_json: bool) -> int:
    """Activate the previous version (or --to VERSION)."""
    return _switch(store_url, as_json, lambda s: s.rollback(to), "rolled back to")


@store.command("activate")
@click.argument("version")
@_store_option()
@json_option
@reporting
def store_activate(version: str, store_url: str | None, as_json: bool) -> int:
    """Activate VERSION."""
    return _switch(store_url, as_json, lambda s: s.activate(version), "activated")


@store.command("get")
@click.argument("keys", nargs=-1, required=True)
@_store_option()
@json_option
@reporting
def store_get(keys: tuple[str, ...], store_url: str | None, as_json: bool) -> int:
    """Read KEYS from the active version, with each prediction's provenance."""
    s = _open(store_url)
    try:
        results = s.get_many(list(keys))
    finally:
        s.close()
    docs: list[dict[str, Any]] = [
        {"key": k, "prediction": r.values if r else None, "provenance": r.provenance() if r else None}
        for k, r in zip(keys, results, strict=True)
    ]
    if as_json:
        console.print_json({"results": docs})
    else:
        console.out.print(
            console.table(
                "predictions",
                ["key", "prediction", "store version", "model version", "computed at"],
                [
                    (
                        d["key"],
                        d["prediction"] if d["prediction"] is not None else "(miss)",
                        *(
                            (d["provenance"] or {}).get(f)
                            for f in ("store_version", "model_version", "computed_at")
                        ),
                    )
                    for d in docs
                ],
            )
        )
    return 0 if all(results) else EXIT_CHECK_FAILED


@store.command("gc")
@_store_option()
@click.option(
    "--keep",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Ready versions to keep (the active one always stays).",
)
@json_option
@reporting
def store_gc(store_url: str | None, keep: int, as_json: bool) -> int:
    """Delete unfinished (orphan) versions and all but the newest KEEP ready versions."""
    s = _open(store_url)
    try:
        deleted = s.gc(keep)
    finally:
        s.close()
    if as_json:
        console.print_json({"deleted": deleted})
    else:
        console.out.print(f"deleted {len(deleted)} version(s){': ' + ', '.join(deleted) if deleted else ''}")
    return 0


@store.command("delete")
@click.argument("version")
@_store_option()
@json_option
@reporting
def store_delete(version: str, store_url: str | None, as_json: bool) -> int:
    """Delete VERSION (not the active one)."""
    s = _open(store_url)
    try:
        s.delete(version)
    finally:
        s.close()
    if as_json:
        console.print_json({"deleted": [version]})
    else:
        console.out.print(f"deleted store version {version}")
    return 0


@cli.command()
@click.option("--model", "model_ref", default=None, metavar="PATH",
              help="Model file or module:function to compute predictions with (dynamic or hybrid).")
@click.option("--store", "store_url", default=None, metavar="URL",
              help="Prediction store to answer from: sqlite:///path.db (static or hybrid).")
@click.option("--name", default=None, help="Model name in URLs [manifest name, else file stem].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes (each loads its own copy of the model).")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Most rows per model call.")
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="How long a batch waits for more requests (under load batches form anyway).")
@click.option("--max-queue", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Requests waiting for the model before new ones get 503.")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=8 << 20, show_default=True,
              help="Largest request body (413 past it).")
@click.option("--max-instances", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Most instances (rows) per request (413 past it).")
@click.option("--ignore-unknown-fields", is_flag=True, help="Ignore fields that are not model features.")
@click.option("--write-back-ttl", default=None, metavar="DURATION",
              help="Reuse dynamic predictions for this long (in-process cache), e.g. 10m.")
@click.option("--require-version-match", is_flag=True,
              help="Hybrid: answer from the store only predictions of the served model version.")
@click.option("--model-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="BLAS/OpenMP threads for the model.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="debug logs one line per request.")
@reporting
def serve(model_ref: str | None, store_url: str | None, name: str | None, host: str, port: int, workers: int,
          max_batch_size: int, max_delay_ms: float, max_queue: int, max_body_bytes: int, max_instances: int,
          ignore_unknown_fields: bool, write_back_ttl: str | None, require_version_match: bool,
          model_threads: int, log_level: str) -> int:
    """Serve predictions over HTTP: from a store (static), a model (dynamic), or both (hybrid)."""
    from augury.serve.settings import LaunchConfig, ServeSettings

    settings = ServeSettings(
        name=name,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        max_queue=max_queue,
        max_body_bytes=max_body_bytes,
        max_instances=max_instances,
        ignore_unknown_fields=ignore_unknown_fields,
        write_back_ttl_s=parse_duration(write_back_ttl) if write_back_ttl else None,
        model_threads=model_threads,
        require_version_match=require_version_match,
    )
    config = LaunchConfig(model_ref, store_url, host, port, workers, log_level, settings)
    from augury.serve.run import serve as run_server

    console.err.print(f"augury: serving ({config.mode} mode) on http://{host}:{port}  (Ctrl-C to stop)")
    run_server(config)
    return 0


@cli.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False),
    default="augury-demo",
    show_default=True,
    help="Folder for the demo's model, data and store.",
)
@click.option(
    "--rows",
    type=click.IntRange(min=100),
    default=200_000,
    show_default=True,
    help="Rows in the demo catalogue.",
)
@reporting
def demo(workdir: str, rows: int) -> int:
    """Run the static half end to end: train, batch-predict, verify, publish, read back."""
    from augury.demo import run_demo

    run_demo(Path(workdir), rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The console script: run a command, map interrupts and usage errors to exit codes."""
    try:
        rv = cli.main(args=argv, prog_name="augury", standalone_mode=False)
    except click.exceptions.Abort:
        console.err.print("augury: interrupted (rerun `augury batch` with --resume to continue a batch run)")
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.err.print("augury: interrupted (rerun `augury batch` with --resume to continue a batch run)")
        return EXIT_INTERRUPTED
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
