"""`augury demo` (and the advisor)."""

from __future__ import annotations

from pathlib import Path

import click

from augury import console
from augury.config import parse_duration

from ._common import json_option, reporting


@click.command()
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
    """Run augury end to end: train, batch-predict, verify, publish, read back, serve hybrid, advise."""
    from augury.demo import run_demo

    run_demo(Path(workdir), rows)
    return 0


@click.command()
@click.argument("model")
@click.argument("data")
@click.option("--key", "keys", multiple=True, metavar="COL", help="Key column(s), as in `augury batch`.")
@click.option("--traffic", default=None, metavar="LOG", help="Past requests (keys or features, timestamps).")
@click.option("--qps", type=float, default=None, help="Request rate to plan for [the log's, else 10].")
@click.option("--latency-slo-ms", type=float, default=None, help="p99 latency target [100].")
@click.option("--max-staleness", default=None, metavar="DURATION", help="How old a prediction may be [1d].")
@click.option(
    "--catalogue-rows",
    type=click.IntRange(min=1),
    default=None,
    help="Size of the whole catalogue when DATA is a sample of it.",
)
@click.option("--cores", type=click.IntRange(min=1), default=None, help="Cores to plan for [this machine's].")
@click.option(
    "--budget",
    "budget_s",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to spend measuring.",
)
@click.option("--report", "report_dir", default=None, metavar="DIR", help="Write an HTML report with plots.")
@json_option
@reporting
def advise(
    model: str,
    data: str,
    keys: tuple[str, ...],
    traffic: str | None,
    qps: float | None,
    latency_slo_ms: float | None,
    max_staleness: str | None,
    catalogue_rows: int | None,
    cores: int | None,
    budget_s: float,
    report_dir: str | None,
    as_json: bool,
) -> int:
    """Measure MODEL on DATA (and the traffic LOG) and recommend static, dynamic or hybrid serving."""
    from augury.advise import advise as run_advise
    from augury.advise import write_report

    advice = run_advise(
        model,
        data,
        key_columns=keys,
        traffic=traffic,
        qps=qps,
        latency_slo_ms=latency_slo_ms,
        max_staleness_s=parse_duration(max_staleness, "--max-staleness") if max_staleness else None,
        catalogue_rows=catalogue_rows,
        cores=cores,
        budget_s=budget_s,
    )
    report = write_report(advice, report_dir) if report_dir else None
    if as_json:
        doc = advice.to_dict()
        if report is not None:
            doc["report"] = str(report)
        console.print_json(doc)
        return 0
    console.out.print(advice.render())
    if report is not None:
        console.out.print(f"report: {report}", markup=False)
    return 0
