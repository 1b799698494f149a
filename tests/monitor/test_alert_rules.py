"""The Prometheus alert rules shipped in deploy/prometheus/augury-alerts.yml: valid (`promtool check rules`),
firing as intended on series a server exports (`promtool test rules`), and naming only metrics a server
with every monitor on does export."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from system_tools import system_tool

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "augury-alerts.yml"

UNIT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'augury_alert_firing{{alert="drift",kind="input",source="dynamic",column="f0",instance="a"}}'
        values: '0 1 1'
      - series: 'augury_alert_firing{{alert="drift",kind="input",source="dynamic",column="f1",instance="a"}}'
        values: '0 0 0'
      - series: 'augury_store_version_age_seconds{{instance="a"}}'
        values: '90000 90060 90120'
      - series: 'augury_alert_firing{{alert="staleness",kind="",source="",column="",instance="a"}}'
        values: '0 1 1'
      - series: 'augury_alert_firing{{alert="shadow",kind="",source="",column="",instance="a"}}'
        values: '0 0 0'
    alert_rule_test:
      - eval_time: 2m
        alertname: AuguryInputDrift
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, source: dynamic, column: f0}}
            exp_annotations:
              summary: "Feature f0 (dynamic) no longer looks like the reference"
              description: "The PSI of feature f0 in the last window of dynamic requests on a is past its
                limit (see augury_drift_psi). Check the feature upstream (units, defaults, joins); if the
                world changed, retrain and publish. docs/monitor.md#alerts"
      - eval_time: 2m
        alertname: AuguryStoreStale
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a}}
            exp_annotations:
              summary: "The prediction store's active version is older than --max-staleness"
              description: "a serves a store version published 1d 1h 2m 0s ago. The batch job did not run,
                failed, or its publish was refused. docs/monitor.md#staleness"
      - eval_time: 2m
        alertname: AuguryShadowDisagreement
        exp_alerts: []
"""


def _promtool() -> str:
    return system_tool("promtool", needed_by="the alert rules' and the Grafana dashboard's tests",
                       package="prometheus")


def test_the_rules_are_valid() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 5 rules found" in out.stdout


def test_the_rules_fire_on_the_servers_series(tmp_path: Path) -> None:
    tests = tmp_path / "rules_test.yml"
    tests.write_text(UNIT_TESTS.format(rules=RULES))
    out = subprocess.run([_promtool(), "test", "rules", str(tests)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_rules_name_only_metrics_a_server_exports(exported_metrics: set[str]) -> None:
    named = set(re.findall(r"\baugury_\w+", RULES.read_text()))
    assert named and named <= exported_metrics, f"not exported: {sorted(named - exported_metrics)}"
