"""Fixtures for the monitor's tests: what a real server with every monitor on exports."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from augury.models import load_model
from augury.serve import ServeSettings, create_app
from augury.store import SQLiteStore

#: the samples each metric type exports, by suffix (prometheus_client's text format; no _created).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


@pytest.fixture()
def exported_metrics(tmp_path: Path, hgb_model: Path, features_parquet: Path) -> set[str]:
    """The sample names on ``/metrics`` of a hybrid server with drift (a reference), the shadow check,
    staleness and a webhook on: every metric it declares, whether or not it has a sample yet."""
    store = SQLiteStore(tmp_path / "s.db")
    store.publish([pa.record_batch({"key": ["k"], "computed_at": [0.0], "label": [1],
                                    "proba_0": [0.2], "proba_1": [0.8]})], model_version="0")
    settings = ServeSettings(reference=str(features_parquet), max_staleness_s=60.0,
                             alert_webhook="http://127.0.0.1:9/alerts", allow_name_mismatch=True)
    try:
        app = create_app(settings, load_model(hgb_model, threads=1), store)
        text = app.state.service.metrics.render()[0].decode()
        app.state.service.tap.close()
    finally:
        store.close()
    names = set()
    for name, kind in re.findall(r"^# TYPE (\w+) (\w+)$", text, re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name  # (a counter's TYPE has it)
        names |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names
