"""`augury demo` (and the advisor)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from augury import console
from augury.config import parse_duration
from augury.errors import ConfigError

if TYPE_CHECKING:
    from augury.advise.overheads import ServingOverheads

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
@click.argument("model", required=False)
@click.argument("data", required=False)
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
@click.option("--core-cost", type=float, default=None, help="Price of one core-hour [0.04].")
@click.option("--store-cost", type=float, default=None, help="Price of one GB-month of store [0.10].")
@click.option(
    "--budget",
    "budget_s",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds to spend measuring.",
)
@click.option(
    "--calibrate",
    is_flag=True,
    help="Measure the server's own costs on this machine with a real `augury serve` (about 20 s) and keep "
    "them for later advice; with MODEL and DATA, advise with them at once.",
)
@click.option(
    "--calibrate-phase",
    "calibrate_phase_s",
    type=click.FloatRange(min=0.3, max=30),
    default=2.5,
    show_default=True,
    help="Seconds of each measured load phase of --calibrate (shorter: quicker, noisier figures).",
)
@click.option(
    "--calibration",
    "calibration",
    default=None,
    metavar="PATH",
    help="Calibration file to write (--calibrate) or read [env AUGURY_CALIBRATION, else "
    "~/.cache/augury/serve-overheads.json].",
)
@click.option("--report", "report_dir", default=None, metavar="DIR", help="Write an HTML report with plots.")
@json_option
@reporting
def advise(
    model: str | None,
    data: str | None,
    keys: tuple[str, ...],
    traffic: str | None,
    qps: float | None,
    latency_slo_ms: float | None,
    max_staleness: str | None,
    catalogue_rows: int | None,
    cores: int | None,
    core_cost: float | None,
    store_cost: float | None,
    budget_s: float,
    calibrate: bool,
    calibrate_phase_s: float,
    calibration: str | None,
    report_dir: str | None,
    as_json: bool,
) -> int:
    """Measure MODEL on DATA (and the traffic LOG) and recommend static, dynamic or hybrid serving."""
    from augury.advise import advise as run_advise
    from augury.advise import overheads, write_report

    if (model is None or data is None) and not calibrate:
        raise ConfigError("augury advise needs MODEL and DATA (or --calibrate alone)")
    _check_flags(qps=qps, latency_slo_ms=latency_slo_ms, core_cost=core_cost, store_cost=store_cost)
    calibrated: ServingOverheads | None = None
    if calibrate:
        from augury.advise.calibrate import calibrate as run_calibration

        path = Path(calibration) if calibration else overheads.default_path()
        measured = run_calibration(phase_s=calibrate_phase_s)
        calibrated = replace(measured, path=str(overheads.save(measured, path)))
        if model is None or data is None:
            if as_json:
                console.print_json(calibrated.to_dict())
            else:
                console.out.print(_calibration_text(calibrated), markup=False)
            return 0
    assert model is not None and data is not None
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
        core_cost=core_cost,
        store_cost=store_cost,
        overheads=calibrated or calibration,
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


def _check_flags(**values: float | None) -> None:
    """The goals' flags checked here, so that an error names the flag given (`advise` itself names its
    parameters: "--core-cost", not "core_cost"); a store may be free, the others must be positive."""
    for name, value in values.items():
        least_zero = name == "store_cost"
        if value is not None and not (math.isfinite(value) and (value >= 0 if least_zero else value > 0)):
            what = "0 or more" if least_zero else "a positive number"
            raise ConfigError(f"--{name.replace('_', '-')} must be {what}, not {value:g}")


def _calibration_text(o: ServingOverheads) -> str:
    return (f"augury serve's own work on this machine: {o.per_request_s * 1e6:.0f} µs per request, "
            f"{o.per_batch_inline_s * 1e6:.0f} µs per batch scored on the loop's thread, "
            f"{o.per_batch_hop_s * 1e6:.0f} µs per batch on the model thread; a trivial request's round trip "
            f"{o.round_trip_s * 1e6:.0f} µs.\nsaved to {o.path}; `augury advise` uses it from now on."
            + "".join(f"\nnote: {note}" for note in o.notes))
