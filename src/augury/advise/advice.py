"""The advice: a mode, the settings to use, the reasons and limits in words, and the numbers behind them.

`Advice.to_dict()` is JSON-able (for ``--json``); `Advice.render()` is a rich renderable for a terminal;
`augury.advise.report.write_report` turns it into a self-contained HTML page with plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from augury.advise import units
from augury.advise.measurements import Goals, Measurements
from augury.advise.queueing import SimResult
from augury.advise.units import ms, sig

if TYPE_CHECKING:
    from augury.advise.options import ModeOption

MODES = ("static", "dynamic", "hybrid")
_STYLE = {"static": "bold cyan", "dynamic": "bold green", "hybrid": "bold magenta"}


@dataclass(frozen=True)
class Forecast:
    """Simulated dynamic serving of `qps` requests/s on `workers` cores, against a p99 target."""

    qps: float
    workers: int
    result: SimResult
    slo_s: float

    @property
    def holds(self) -> bool:
        return self.result.holds(self.slo_s)

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {"qps": sig(self.qps), "workers": self.workers, "p50_ms": ms(r.p50_s), "p99_ms": ms(r.p99_s),
                "utilisation": sig(r.utilisation, 3), "model_busy": sig(r.busy, 3),
                "mean_batch": sig(r.mean_batch, 3),
                "stable": r.stable, "holds": self.holds,
                "settings": {"max_batch_size": r.settings.max_batch_size,
                             "max_delay_ms": r.settings.max_delay_ms},
                "simulated": True}


@dataclass(frozen=True)
class Plan:
    """What to run. Batcher settings for the dynamic part (None in static mode); the head to precompute
    (every catalogue example in static mode) with its share of requests, how often to refresh it and the
    store TTL; the store's estimated size and the time to score the head on `workers` cores."""

    workers: int
    max_batch_size: int | None = None
    max_delay_ms: float | None = None
    head_size: int | None = None
    head_share: float | None = None
    refresh_interval_s: float | None = None
    ttl_s: float | None = None
    store_bytes: float | None = None
    score_head_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "max_batch_size": self.max_batch_size,
                "max_delay_ms": self.max_delay_ms, "head_size": self.head_size,
                "head_share": sig(self.head_share), "refresh_interval_s": sig(self.refresh_interval_s),
                "ttl_s": sig(self.ttl_s), "store_bytes_estimate": sig(self.store_bytes),
                "score_head_s_estimate": sig(self.score_head_s)}


@dataclass(frozen=True)
class Advice:
    """A recommendation and everything it rests on. `goals` are the values used (given or assumed;
    `assumptions` says which were assumed); `dynamic` forecasts serving all traffic dynamically on the
    given cores, `tail` (hybrid) the requests the head does not answer; `by_rate` is predicted latency
    across request rates with the recommended (or best) batcher settings."""

    mode: str
    summary: str
    plan: Plan
    reasons: tuple[str, ...]
    limits: tuple[str, ...]
    assumptions: tuple[str, ...]
    goals: Goals
    measurements: Measurements
    dynamic: Forecast
    per_core_qps: float
    cores_needed: int | None
    tail: Forecast | None = None
    by_rate: tuple[SimResult, ...] = ()
    options: tuple[ModeOption, ...] = ()

    def option(self, mode: str) -> ModeOption | None:
        """The costed option for `mode` ("static", "dynamic", "hybrid"), if any."""
        return next((o for o in self.options if o.mode == mode), None)

    def to_dict(self) -> dict[str, Any]:
        g = self.goals
        doc: dict[str, Any] = units.jsonable({
            "mode": self.mode,
            "summary": self.summary,
            "settings": self.plan.to_dict(),
            "reasons": list(self.reasons),
            "limits": list(self.limits),
            "assumptions": list(self.assumptions),
            "goals": {"qps": sig(g.qps), "latency_slo_ms": g.latency_slo_ms,
                      "max_staleness_s": g.max_staleness_s, "cores": g.cores,
                      "core_cost_per_hour": g.core_cost, "store_cost_per_gb_month": g.store_cost},
            "modes": {o.mode: o.to_dict() for o in self.options},
            "serving_overheads": self.measurements.serving.to_dict(),
            "dynamic": {**self.dynamic.to_dict(), "max_qps_per_core_within_slo": sig(self.per_core_qps),
                        "cores_needed": self.cores_needed},
            "tail": self.tail.to_dict() if self.tail else None,
            "by_rate": [{"qps": sig(r.qps), "p50_ms": ms(r.p50_s), "p99_ms": ms(r.p99_s),
                         "utilisation": sig(r.utilisation, 3), "stable": r.stable} for r in self.by_rate],
            "measurements": self.measurements.to_dict(),
        })
        return doc

    def render(self) -> RenderableType:
        """A terminal summary: the mode, why, the limits, the settings and the key measurements."""
        parts: list[RenderableType] = [
            Text.assemble(("Recommendation: ", "bold"), (self.mode.upper(), _STYLE.get(self.mode, "bold"))),
            Text(self.summary),
            _bullets("Why", self.reasons),
            _bullets("Limits", self.limits),
            _table("Settings", _settings_rows(self)),
            _modes_table(self),
            _table("Measured on this machine", measured_rows(self)),
        ]
        if self.assumptions:
            parts.append(_bullets("Assumed", self.assumptions, style="dim"))
        return Group(*parts)


def _bullets(title: str, items: tuple[str, ...], style: str = "") -> RenderableType:
    text = Text(f"\n{title}\n", style="bold")
    for item in items:
        text.append(f"  • {item}\n", style=style)
    return text


def _table(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for name, value in rows:
        t.add_row(Text(name), Text(value))  # as they are: a model name may hold "[...]" (not markup)
    return t


def mode_rows(a: Advice) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Every mode side by side, for people: the column heads (the chosen mode starred) and the rows."""
    heads = [o.mode + (" *" if o.mode == a.mode else "") for o in a.options]

    def each(fn: Callable[[ModeOption], str]) -> list[str]:
        return [fn(o) if o.available else "-" for o in a.options]

    def verified(o: ModeOption) -> str:
        if o.verified:
            return "yes"
        return f"{units.share(o.verified_share)} (head)" if o.verified_share else "no"

    rows = [
        ("cores serving", each(lambda o: str(o.serve_cores))),
        ("refresh CPU per day", each(lambda o: units.duration(o.refresh_core_s_day) if o.head_size
                                     else "none")),
        ("store", each(lambda o: units.size(o.store_bytes))),
        ("cost per day", each(lambda o: f"{o.cost_per_day:.3g}")),
        ("p50 / p99", each(lambda o: f"{units.duration(o.p50_s)} / {units.duration(o.p99_s)}")),
        ("requests answered", each(lambda o: units.share(o.answered_share))),
        ("worst staleness", each(lambda o: units.duration(o.worst_staleness_s) if o.head_size
                                 else "none (computed on request)")),
        ("verified before served", each(verified)),
        ("meets every constraint", ["yes" if o.meets else "no: " + "; ".join(o.misses) for o in a.options]),
    ]
    return heads, rows


def _modes_table(a: Advice) -> Table:
    t = Table(title="Every mode (cost per day at the prices; predicted latency)", title_justify="left",
              box=None, pad_edge=False)
    heads, rows = mode_rows(a)
    t.add_column("")
    for o, head in zip(a.options, heads, strict=True):
        t.add_column(head, style=_STYLE.get(o.mode, ""))
    for name, values in rows:
        t.add_row(Text(name, style="bold"), *(Text(v) for v in values))
    return t


def _settings_rows(a: Advice) -> list[tuple[str, str]]:
    p = a.plan
    rows = [("mode", a.mode), ("cores (workers)", str(p.workers))]
    if p.max_batch_size is not None:
        rows.append(("--max-batch-size", str(p.max_batch_size)))
        rows.append(("--max-delay-ms", f"{p.max_delay_ms:g}"))
    if p.head_size is not None:
        rows.append(("examples to precompute", units.count(p.head_size)))
        rows.append(("share of requests they answer", units.share(p.head_share)))
        rows.append(("refresh every", units.duration(p.refresh_interval_s)))
        rows.append(("store TTL (publish --ttl)", units.flag(p.ttl_s) if p.ttl_s else "none"))
        rows.append(("store size (estimate)", units.size(p.store_bytes)))
        rows.append(("time to score them (estimate)", units.duration(p.score_head_s)))
    return rows


def measured_rows(a: Advice) -> list[tuple[str, str]]:
    """What was measured on this machine (and the server's own costs used, and calibration's notes), for
    people: the terminal's table and the HTML report's."""
    m = a.measurements
    mc = m.model
    one = min(mc.latency, key=lambda x: x.batch_size)
    rows = [
        ("model", f"{mc.name} ({mc.version})"),
        ("latency, 1 example", f"p50 {units.duration(one.p50_s)}, p99 {units.duration(one.p99_s)}"
         + (" (lower bound)" if one.lower_bound else "")),
        ("largest batch measured", f"{mc.largest_measured} rows" + (" (larger extrapolated)"
                                                                      if mc.extrapolated else "")),
        ("throughput per core", f"{units.count(mc.throughput_rows_s)} rows/s"),
        ("memory when loaded", units.size(mc.rss_bytes)),
        ("catalogue", f"{units.count(m.catalogue.catalogue_rows)} examples"
         + (f" (sample of {units.count(m.catalogue.sample_rows)})" if m.catalogue.sampled else "")),
    ]
    if m.store is not None:
        rows.append(("store lookup, 1 key", f"p50 {units.duration(m.store.lookup_p50_s)}, "
                                            f"p99 {units.duration(m.store.lookup_p99_s)}"))
        rows.append(("bytes per stored prediction", f"{m.store.bytes_per_prediction:.0f}"))
    t = m.traffic
    if t is None:
        rows.append(("traffic", "no log given: coverage unknown"))
    else:
        rows.append(("requests in the log", units.count(t.requests)))
        rows.append(("on catalogue examples", units.share(t.catalogue_share)
                     + (" (estimated from the sample)" if t.catalogue_share_estimated else "")))
        late = units.share(t.new_share_late)
        rows.append(("for keys never seen before", f"{units.share(t.new_share)} (second half: {late})"))
    d = a.dynamic
    rows.append(("dynamic, all traffic (simulated)",
                 f"p50 {units.duration(d.result.p50_s)}, p99 {units.duration(d.result.p99_s)} at "
                 f"{units.rate(d.qps)} on {d.workers} core(s)"))
    rows.append(("dynamic capacity within target", f"{units.rate(a.per_core_qps)} per core"))
    s = m.serving
    rows.append(("server's own work", f"{s.per_request_s * 1e6:.0f} µs per request"
                 + (f" ({s.work_used})" if s.work_used else "") + ", "
                 f"{s.per_batch_inline_s * 1e6:.0f} / {s.per_batch_hop_s * 1e6:.0f} µs per batch (inline / "
                 f"model thread), round trip {s.round_trip_s * 1e6:.0f} µs"
                 + (f", core stalled {units.share(s.stalls.share)} of the time "
                    f"({s.stalls.per_s:.0f} stalls/s)" if s.calibrated else "")
                 + f": {s.source}" + (f" [{s.path}]" if s.path else "")))
    if s.calibrated:
        pauses = s.pauses_for(one.p50_s)
        said = s.pauses_said  # a model's server's figures name their share already: say it once
        rows.append(("server's pauses under load", said if f"{pauses.per_request:.2%} of requests" in said
                     else f"{units.share(pauses.per_request)} of requests: {said}"))
    rows.extend(("calibration note", note) for note in s.notes)
    return rows
