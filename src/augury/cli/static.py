"""The static path: describe a model, batch-score, verify, publish."""

from __future__ import annotations

import click

from augury import console
from augury.config import Settings, parse_duration

from ._common import EXIT_CHECK_FAILED, evaluator_option, json_option, reporting, resolve_store, store_option


@click.command()
@click.argument("model")
@evaluator_option
@json_option
@reporting
def info(model: str, evaluator: str, as_json: bool) -> int:
    """Describe MODEL (a model file or module:function): name, version, evaluator, input and output schema."""
    from augury.models import load_model

    m = load_model(model, evaluator=evaluator)
    d = m.info.to_dict()
    if as_json:
        console.print_json(d)
        return 0
    name, version, kind, task, evaluated = (console.plain(d[k])
                                            for k in ("name", "version", "format", "task", "evaluator"))
    console.out.print(f"[bold]{name}[/] version {version} ({kind}, {task}), scored by {evaluated}")
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


@click.command()
@click.argument("model")
@click.argument("input_path", metavar="INPUT")
@click.option("-o", "--output", required=True, type=click.Path(),
              help="Parquet file to write, or a folder (ending in /) for a prediction dataset.")
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
    type=click.Choice(["auto", "processes", "threads", "inline", "dask"]),
    default="auto",
    show_default=True,
    help="Where work runs: worker processes (auto), threads in one process, inline, or a Dask cluster "
    "(augury[dask]).",
)
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="With --engine dask: the scheduler of a running cluster (tcp://HOST:PORT) "
              "[a local cluster of --workers processes].")
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
@evaluator_option
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
    scheduler: str | None,
    max_error_rate: float,
    errors_path: str | None,
    name: str | None,
    evaluator: str,
    as_json: bool,
) -> int:
    """Score every row of INPUT (Parquet, CSV, JSON Lines; a file or a folder) with MODEL."""
    from augury.batch import BatchOptions, run_batch

    settings = Settings.from_env()
    options = BatchOptions(
        engine=engine,
        scheduler=scheduler,
        key_columns=keys,
        chunk_rows=chunk_rows or settings.chunk_rows,
        workers=workers or settings.workers or None,
        resume=resume,
        max_error_rate=max_error_rate,
        errors_path=errors_path or None,
        model_name=name,
        evaluator=evaluator,
    )
    with console.ProgressReporter("scoring") as progress:
        result = run_batch(model, input_path, output, options, on_progress=progress)
    for note in result.notes:
        console.err.print(f"augury: {note}", markup=False)
    if as_json:
        console.print_json(result.to_dict())
        return 0
    d = result.to_dict()
    console.out.print(
        console.table(
            f"batch: {result.model_name} {result.model_version} ({result.evaluator})",
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


@click.command()
@click.argument("predictions")
@click.option("--checks", type=click.Path(dir_okay=False), default=None, help="TOML file of gate settings.")
@store_option()
@json_option
@reporting
def verify(predictions: str, checks: str | None, store_url: str | None, as_json: bool) -> int:
    """Check PREDICTIONS against the gates; with --store, also against the active version (drift, count)."""
    from augury.verify import load_checks
    from augury.verify import verify as run_verify

    baseline = None
    if store_url:
        from augury.store import open_store

        store = open_store(store_url, create=False)  # a mistyped path is an error, not an empty baseline
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


@click.command()
@click.argument("predictions")
@store_option(required=True)
@click.option("--checks", type=click.Path(dir_okay=False), default=None, help="TOML file of gate settings.")
@click.option(
    "--ttl", default=None, metavar="DURATION", help="Serve these predictions for at most this long."
)
@click.option("--no-activate", is_flag=True, help="Load the version but leave the active one as it is.")
@click.option("--inputs", "inputs", default=None, metavar="DATA",
              help="The data the predictions were scored from (Parquet or CSV): its features' profile is "
                   "stored with the version, the reference for a server's input drift monitoring.")
@click.option("--writers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes that load a dataset folder's parts (or a file's row groups) in parallel. "
                   "Default: the store's own, one per core (2 to 4) for Redis, 1 for SQLite (one stream is "
                   "its fastest load); a memory store loads as one stream.")
@json_option
@reporting
def publish(
    predictions: str, store_url: str | None, checks: str | None, ttl: str | None, no_activate: bool,
    inputs: str | None, writers: int | None, as_json: bool,
) -> int:
    """Verify PREDICTIONS (a Parquet file or a dataset folder), then load them as a new store version and
    activate it atomically. A dataset's parts load in parallel (--writers); a publish that fails or is
    killed midway leaves the active version as it was (gc removes what a kill left)."""
    from augury.publish import publish_predictions
    from augury.store import open_store
    from augury.verify import load_checks
    from augury.verify.source import PredictionsFile

    ttl_s = parse_duration(ttl, "--ttl") if ttl else None
    gates = load_checks(checks)
    with PredictionsFile(predictions):  # a missing or unreadable file fails before a store is created
        pass
    store = open_store(resolve_store(store_url), create=True)  # the one command that may create a store
    try:
        result = publish_predictions(predictions, store, gates, ttl_s=ttl_s, activate=not no_activate,
                                     inputs=inputs, writers=writers)
    finally:
        store.close()
    if as_json:
        console.print_json({"version": result.version.to_dict(), "report": result.report.to_dict(),
                            "writers": result.writers, "verify_s": round(result.verify_s, 3),
                            "load_s": round(result.load_s, 3)})
        return 0
    console.out.print(result.report.render())
    v = result.version
    state = "active" if v.active else "loaded, not active"
    console.out.print(
        f"published store version [bold]{console.plain(v.version)}[/] ({v.row_count:,} rows, model "
        f"{console.plain(v.model_version)}, evaluator {console.plain(v.evaluator or 'not recorded')}): "
        f"{state}; verified in {result.verify_s:.1f} s, loaded in {result.load_s:.1f} s by "
        f"{result.writers} writer{'s' if result.writers > 1 else ''}"
    )
    return 0
