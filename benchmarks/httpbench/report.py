"""The report: one row per system (medians over rounds), the markdown table, the problems seen, the JSON.

Each ratio is the median over rounds of the system's req/s divided by its bare endpoint's req/s in the
same round: ``x bare`` against the issue's bare endpoint (plain httptools), ``x bare, same protocol``
against the bare endpoint served with augury's own HTTP protocol. A target is judged against each.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .systems import System
from .workload import Workload

VERDICT = {True: "met", False: "NOT met", None: "n/a"}


def _ratios(ok: Sequence[dict[str, Any]], rps: dict[tuple[str, int], float], baseline: str) -> list[float]:
    return [r["load"]["rps"] / rps[(baseline, r["round"])] for r in ok if (baseline, r["round"]) in rps]


def summarize(recs: Sequence[dict[str, Any]], systems: dict[str, System],
              order: Sequence[str]) -> list[dict[str, Any]]:
    """One row per system: medians over rounds, ratio = median over rounds of req/s / baseline req/s
    (``ratio``: against `System.baseline`; ``ratio_same_protocol``: against `System.same_protocol`)."""
    rps = {(r["system"], r["round"]): r["load"]["rps"] for r in recs if "load" in r}
    rows: list[dict[str, Any]] = []
    for name in order:
        mine = [r for r in recs if r["system"] == name and "skipped" not in r]
        ok = [r for r in mine if "load" in r]
        s = systems[name]
        row: dict[str, Any] = {"system": name, "rounds": len(ok), "failed_rounds": len(mine) - len(ok),
                               "baseline": s.baseline, "same_protocol": s.same_protocol,
                               "target": s.target.text() if s.target else None}
        skipped = [r["skipped"] for r in recs if r["system"] == name and "skipped" in r]
        if skipped and not mine:
            row["skipped"] = skipped[0]
        if ok:
            def med(key: str, rs: list[dict[str, Any]] = ok) -> float:
                return float(statistics.median(r["load"][key] for r in rs))
            ratios = _ratios(ok, rps, s.baseline)
            same = _ratios(ok, rps, s.same_protocol) if s.same_protocol else []
            row.update({
                "rps": med("rps"), "p50_ms": med("p50_us") / 1000, "p90_ms": med("p90_us") / 1000,
                "p99_ms": med("p99_us") / 1000, "non_2xx": sum(r["load"]["non_2xx"] for r in ok),
                "socket_errors": sum(r["load"]["socket_errors"] for r in ok),
                "server_cores": med("server_cores"), "peak_pss_mb": max(r["load"]["peak_pss_mb"] for r in ok),
                "startup_s": statistics.median(r["startup_s"] for r in ok),
                "ratio": statistics.median(ratios) if ratios else None,
                "ratio_same_protocol": statistics.median(same) if same else None,
                "check_ok": not any(r["check_problems"] for r in ok),
            })
            if s.target is not None and ratios:
                row["meets_target"] = s.target.meets(row["ratio"], row["p99_ms"])
            if s.target is not None and same:
                row["meets_target_same_protocol"] = s.target.meets(row["ratio_same_protocol"], row["p99_ms"])
        rows.append(row)
    return rows


def _ratio_cell(system: str, baseline: str | None, ratio: float | None) -> str:
    if baseline is None or baseline == system:
        return ""
    if ratio is None:
        return f"n/a ({baseline} not run)"
    return f"{ratio:.2f} ({baseline})"


def _target_cell(r: dict[str, Any]) -> str:
    if not r["target"]:
        return ""
    verdict = VERDICT[r.get("meets_target")]
    if r["same_protocol"] is None:
        return f"{r['target']}: {verdict}"
    same = VERDICT[r.get("meets_target_same_protocol")]
    return f"{r['target']}: {verdict} ({r['baseline']}), {same} ({r['same_protocol']})"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| system | req/s | x bare (which) | x bare, same protocol (which) | target | p50 ms | p90 ms "
        "| p99 ms | non-2xx | socket err | server cores | peak PSS MB | start s | check |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['system']} | SKIPPED: {r['skipped']} | | | | | | | | | | | | |")
            continue
        if "rps" not in r:
            lines.append(f"| {r['system']} | FAILED | | | {r['target'] or ''} | | | | | | | | | |")
            continue
        ratio = _ratio_cell(r["system"], r["baseline"], r["ratio"])
        same = _ratio_cell(r["system"], r["same_protocol"], r["ratio_same_protocol"])
        lines.append(
            f"| {r['system']} | {r['rps']:,.0f} | {ratio} | {same} | {_target_cell(r)} | {r['p50_ms']:.2f} "
            f"| {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']} | {r['socket_errors']} "
            f"| {r['server_cores']:.2f} | {r['peak_pss_mb']:.0f} | {r['startup_s']:.1f} "
            f"| {'ok' if r['check_ok'] else 'FAIL'} |")
    return "\n".join(lines)


def server_notes(recs: Sequence[dict[str, Any]]) -> list[str]:
    """What the server's author should look at: failures, wrong answers, errors, slow start or stop."""
    notes = []
    for r in recs:
        where = f"{r['system']} (round {r['round']})"
        if "skipped" in r:
            continue
        if "error" in r:
            tail = r.get("stderr_tail", "").strip().replace("\n", "\n    ")
            notes.append(f"{where} FAILED: {r['error']}" + (f"\n    {tail}" if tail else ""))
        notes.extend(f"{where} check: {p}" for p in r.get("check_problems", []))
        load = r.get("load", {})
        if load.get("non_2xx") or load.get("socket_errors"):
            notes.append(f"{where}: {load['non_2xx']} non-2xx answers, {load['socket_errors']} socket errors "
                         f"of {load['requests']:,} requests")
        if r.get("log_errors"):
            notes.append(f"{where}: error lines in {r['log']}: {r['log_errors'][:3]}")
        if r.get("startup_s", 0) > 10:
            notes.append(f"{where}: slow start, {r['startup_s']:.1f} s to the first valid answer")
        if r.get("stop_s", 0) > 5:
            notes.append(f"{where}: slow stop, {r['stop_s']:.1f} s after SIGTERM to the process group")
    return notes


def write_json(out: Path, w: Workload, skipped: dict[str, str], rows: Sequence[dict[str, Any]],
               recs: Sequence[dict[str, Any]], table: str, notes: Sequence[str]) -> None:
    """Every record and the summary, with the command line, Python version, CPU count and workload."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "argv": sys.argv, "python": platform.python_version(), "cpus": os.cpu_count(),
        "workload": w.meta, "skipped": skipped, "summary": rows, "records": recs, "table": table,
        "notes": notes},
        indent=2, default=str))
