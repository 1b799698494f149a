"""The Grafana dashboard shipped in deploy/grafana/augury.json: every query is valid PromQL (`promtool`
checks it, as a recording rule) and names only metrics a server with every monitor on exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from test_alert_rules import _promtool

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "augury.json"
#: Grafana's variables as Prometheus would receive them.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}


def queries() -> list[str]:
    """Every PromQL query of the dashboard: its panels' targets and its variables' queries."""
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    found = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["query"]["query"])
    return found


def test_every_query_names_only_metrics_a_server_exports(exported_metrics: set[str]) -> None:
    named = {name for q in queries() for name in re.findall(r"\baugury_\w+", q)}
    assert len(named) >= 20 and named <= exported_metrics, f"not exported: {sorted(named - exported_metrics)}"


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    rules = []
    for i, q in enumerate(queries()):
        if q.startswith("label_values("):  # Grafana's own function: its argument is a metric name
            continue
        for variable, value in VARIABLES.items():
            q = q.replace(variable, value)
        rules.append({"record": f"augury:grafana_{i}", "expr": q})
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "grafana", "rules": rules}]}))  # (JSON is YAML)
    out = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_the_dashboard_has_a_panel_for_each_signal() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " / ".join(p["title"] for p in board["panels"]).lower()
    for signal in ("request rate", "latency by source", "static hit ratio", "batch sizes", "queue depth",
                   "drift per column", "staleness", "shadow disagreement", "alerts firing"):
        assert signal in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
