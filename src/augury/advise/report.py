"""The advice as one self-contained HTML page: the recommendation, its reasons and limits, the numbers,
and three plots embedded as PNG (matplotlib, Agg backend): latency by batch size, coverage by catalogue
size, and predicted latency by request rate. Nothing is loaded from elsewhere (no scripts, fonts or
links), so the file can be mailed or attached to a ticket as it is.

matplotlib is an optional dependency: ``pip install 'augury[advise]'``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from augury.advise import units
from augury.advise.advice import Advice, measured_rows, mode_rows
from augury.errors import InputError, MissingExtraError

FILENAME = "advice.html"
_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.mode{display:inline-block;padding:.15em .6em;border-radius:.3em;color:#fff;background:#555}
.static{background:#1b7f8c}.dynamic{background:#2e8540}.hybrid{background:#8c3b8c}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #eee;text-align:left}
img{max-width:100%}.dim{color:#777}pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:.8em}
"""


def write_report(advice: Advice, directory: str | os.PathLike[str]) -> Path:
    """Write `directory`/advice.html (the folder is created if missing); returns its path."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the report folder {folder}: {exc}") from exc
    plots = {"Latency by batch size (measured, one core)": _latency_plot(advice),
             "Coverage by catalogue size (from the traffic log)": _coverage_plot(advice),
             "Predicted latency by request rate (simulated)": _rate_plot(advice)}
    path = folder / FILENAME
    try:
        path.write_text(_page(advice, plots), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the report {path}: {exc}") from exc
    return path


def _page(a: Advice, plots: dict[str, str]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>augury advise: "
             f"{e(a.measurements.model.name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Serving advice for {e(a.measurements.model.name)} <span class='mode {e(a.mode)}'>"
             f"{e(a.mode)}</span></h1>", f"<p>{e(a.summary)}</p>",
             _list("Why", a.reasons), _list("Limits", a.limits), "<h2>Settings</h2>",
             _rows(_plan_rows(a)), _modes(a), "<h2>Measured on this machine</h2>", _rows(measured_rows(a))]
    for title, png in plots.items():
        parts.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,{png}'>")
    if a.assumptions:
        parts.append(_list("Assumed", a.assumptions))
    numbers = e(json.dumps(a.to_dict(), indent=2), quote=False)
    parts.append(f"<h2>All numbers (JSON)</h2><pre>{numbers}</pre>")
    parts.append("<p class='dim'>Latency under load is simulated from the measured model times (see "
                 "docs/advise.md); store sizes and scoring times are estimates scaled from the sample.</p>")
    return "\n".join([*parts, "</body></html>"])


def _modes(a: Advice) -> str:
    e = html.escape
    heads, rows = mode_rows(a)
    head = "".join(f"<th>{e(h)}</th>" for h in heads)
    body = "".join(f"<tr><th>{e(name)}</th>" + "".join(f"<td>{e(v)}</td>" for v in values) + "</tr>"
                   for name, values in rows)
    return f"<h2>Every mode (cost per day at the prices)</h2><table><tr><th></th>{head}</tr>{body}</table>"


def _list(title: str, items: tuple[str, ...]) -> str:
    items_html = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    return f"<h2>{html.escape(title)}</h2><ul>{items_html}</ul>"


def _rows(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def _plan_rows(a: Advice) -> list[tuple[str, str]]:
    p = a.plan
    rows = [("cores (workers)", str(p.workers))]
    if p.max_batch_size is not None:
        rows += [("--max-batch-size", str(p.max_batch_size)), ("--max-delay-ms", f"{p.max_delay_ms:g}")]
    if p.head_size is not None:
        rows += [("examples to precompute", units.count(p.head_size)),
                 ("share of requests they answer", units.share(p.head_share)),
                 ("refresh every", units.duration(p.refresh_interval_s)),
                 ("publish --ttl", units.flag(p.ttl_s) if p.ttl_s else "none"),
                 ("store size (estimate)", units.size(p.store_bytes))]
    return rows


def _pyplot() -> Any:
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise MissingExtraError("the advice report", "advise", exc.name or "matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plain_ticks(ax: Any) -> None:
    """Log axes labelled 0.5, 20, 1000 rather than in powers of ten."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.6g}")
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _png(fig: Any) -> str:
    for ax in fig.axes:
        _plain_ticks(ax)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=96)
    _pyplot().close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _latency_plot(a: Advice) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    pts = sorted(a.measurements.model.latency, key=lambda p: p.batch_size)
    for key, label, style in (("p50_s", "p50", "-"), ("p99_s", "p99", "--")):
        ax.plot([p.batch_size for p in pts], [getattr(p, key) * 1e3 for p in pts], style, color="#555",
                label=f"{label}")
        measured = [p for p in pts if p.measured]
        ax.plot([p.batch_size for p in measured], [getattr(p, key) * 1e3 for p in measured], "o",
                color="#1b7f8c", markersize=4)
    ax.plot([], [], "o", color="#1b7f8c", label="measured (others extrapolated)")
    ax.set(xscale="log", yscale="log", xlabel="batch size (rows)", ylabel="ms per call")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _coverage_plot(a: Advice) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    t = a.measurements.traffic
    if t is None or not t.coverage:
        ax.text(0.5, 0.5, "no traffic log given: coverage unknown", ha="center", va="center")
        ax.set_axis_off()
        return _png(fig)
    ax.plot([p.head for p in t.coverage], [p.share * 100 for p in t.coverage], "-", color="#8c3b8c")
    ax.axhline(t.catalogue_share * 100, color="#999", linestyle=":", label="all catalogue examples")
    if a.plan.head_size and a.mode == "hybrid" and a.plan.head_share is not None:
        ax.plot([a.plan.head_size], [a.plan.head_share * 100], "o", color="#c0392b",
                label=f"recommended head: {units.count(a.plan.head_size)}")
    ax.set(xscale="log", ylim=(0, 101), xlabel="most requested catalogue examples precomputed",
           ylabel="% of requests answered")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _rate_plot(a: Advice) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    stable = [r for r in a.by_rate if r.stable]
    if stable:
        ax.plot([r.qps for r in stable], [r.p50_s * 1e3 for r in stable], "-", color="#2e8540", label="p50")
        ax.plot([r.qps for r in stable], [r.p99_s * 1e3 for r in stable], "--", color="#2e8540", label="p99")
    over = [r.qps for r in a.by_rate if not r.stable]
    if over:
        ax.axvspan(min(over), max(over), color="#c0392b", alpha=0.12, label="overloaded (unbounded queue)")
    ax.axhline(a.goals.latency_slo_ms or math.nan, color="#c0392b", linestyle=":", label="p99 target")
    rate, what = (a.tail.qps, "requests not in the head") if a.tail else (a.goals.qps, "request rate")
    ax.axvline(rate or math.nan, color="#555", linestyle=":", label=what)
    r0 = a.by_rate[0] if a.by_rate else None
    note = (f"{r0.workers} core(s), --max-batch-size {r0.settings.max_batch_size}, --max-delay-ms "
            f"{r0.settings.max_delay_ms:g}" if r0 else "")
    ax.set(xscale="log", yscale="log", xlabel="requests per second (all workers)", ylabel="ms",
           title=note)
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)
