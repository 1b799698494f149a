"""The live page, ``GET /dashboard``, in a real headless browser (Debian's chromium): a hybrid server with
every monitor on is sent traffic, the page is loaded and left to refresh, and its DOM is read back. The
page writes any error of its own (an exception, a rejected promise, a ``console.error``) into its
``#errors`` element, so the dumped DOM says whether it ran cleanly; its charts carry what they drew in
``data-`` attributes."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from augury.batch import BatchOptions, run_batch
from augury.models import Model
from augury.publish import publish_predictions
from augury.serve import ServeSettings, create_app
from augury.store import SQLiteStore
from augury.verify import load_checks
from system_tools import system_tool

from .helpers import LiveServer, add_model, until

STATIC_ROWS = 300
#: virtual time the page runs for in chromium: its first load and a few 2-second refreshes.
BUDGET_MS = 7000


def chromium() -> str:
    """The chromium on PATH (`system_tool`: fails the test, or skips it with AUGURY_SKIP_CHROMIUM=1)."""
    return system_tool("chromium", "chromium-browser", needed_by="the dashboard's browser tests",
                       package="chromium", skip_env="AUGURY_SKIP_CHROMIUM")


@pytest.fixture(scope="module")
def served(hgb: Model, hgb_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A hybrid server (the suite's hgb model, a store of its predictions of `STATIC_ROWS` rows) watching
    drift against a reference, staleness and the shadow check, after traffic: every stored row sent once
    (static) and 200 unseen rows (dynamic), in requests of 10 rows."""
    tmp = tmp_path_factory.mktemp("dashboard")
    rng = np.random.default_rng(4)
    stored = rng.normal(size=(STATIC_ROWS, 4))
    pq.write_table(pa.table({f"f{j}": stored[:, j] for j in range(4)}), tmp / "catalogue.parquet")
    run_batch(str(hgb_model), tmp / "catalogue.parquet", tmp / "preds.parquet", BatchOptions(workers=1))
    reference = rng.normal(size=(2000, 4))
    pq.write_table(pa.table({f"f{j}": reference[:, j] for j in range(4)}), tmp / "reference.parquet")
    config = tmp / "monitor.toml"
    config.write_text("[window]\nrequests = 20\nmin_rows = 100\n\n[shadow]\nshare = 1.0\nmin_rows = 100\n")
    store = SQLiteStore(tmp / "preds.db")
    publish_predictions(tmp / "preds.parquet", store, load_checks(None))
    settings = ServeSettings(reference=str(tmp / "reference.parquet"), monitor_config=str(config),
                             max_staleness_s=86400.0)
    rows = np.vstack([stored, rng.normal(size=(200, 4))])
    try:
        with LiveServer(create_app(settings, hgb, store)) as server, httpx.Client(timeout=30) as client:
            for start in range(0, len(rows), 10):
                instances = [{f"f{j}": float(v) for j, v in enumerate(row)} for row in rows[start:start + 10]]
                r = client.post(f"{server.url}/v1/models/hgb:predict", json={"instances": instances})
                assert r.status_code == 200
            until(lambda: "augury_shadow_disagreement " in client.get(f"{server.url}/metrics").text)
            yield {"url": server.url, "client": client, "requests": len(rows) // 10}
    finally:
        store.close()


class Dom(HTMLParser):
    """The elements of a dumped DOM that the test reads: by id, and every svg's children."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self.svg_children: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self._open: list[str] = []
        self._svg: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {k: v or "" for k, v in attrs}
        if "id" in named:
            self.by_id[named["id"]] = named
            self.text.setdefault(named["id"], "")
        if tag == "svg":
            self._svg = named.get("id")
            self.svg_children[self._svg or ""] = []
        elif self._svg is not None:
            self.svg_children[self._svg].append((tag, named))
        self._open.append(named.get("id", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for element in self._open:
            if element:
                self.text[element] += data


def render(url: str) -> str:
    """The page's DOM after `BUDGET_MS` of virtual time in headless chromium."""
    out = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-extensions", "--disable-dev-shm-usage", "--enable-logging=stderr",
                          "--window-size=1280,2000", f"--virtual-time-budget={BUDGET_MS}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    return out.stdout


def test_the_dashboard_renders_the_traffic_in_chromium(served: dict[str, Any]) -> None:
    dom = Dom(render(f"{served['url']}/dashboard"))
    body = dom.by_id
    assert dom.text["errors"] == "" and "hidden" in body["errors"], dom.text["errors"]
    assert re.match(r"hgb · version \S+ · hybrid", dom.text["model"])
    assert dom.text["status"].startswith("updated")
    requests = int(dom.text["total-requests"])
    assert requests >= served["requests"]  # (and the probe's /metrics scrapes)
    assert dom.text["hit-ratio"].startswith("60.0% of 500 lookups")
    assert int(dom.text["total-batches"]) >= 1
    assert float(body["chart-rate"]["data-max"]) > 0  # a rate was drawn
    for chart in ("chart-rate", "chart-latency", "chart-hits", "chart-batch", "chart-queue", "chart-age",
                  "chart-shadow"):
        assert int(body[chart]["data-points"]) >= 1, chart
    latency = {a.get("data-series") for tag, a in dom.svg_children["chart-latency"] if tag == "path"}
    assert {"static p50", "static p99", "dynamic p50", "dynamic p99"} <= latency  # (no request was mixed)
    bars = {a["data-column"]: float(a["data-psi"]) for tag, a in dom.svg_children["chart-drift"]
            if tag == "rect"}
    assert {"f0", "f1", "f2", "f3", "label"} <= set(bars)
    staleness = dom.text["staleness"]
    assert staleness.startswith("version 1 published") and staleness.endswith("ago (limit 24.0 h)")
    assert "% disagree" in dom.text["shadow"]


def test_the_dashboard_data_is_the_servers_metrics(served: dict[str, Any]) -> None:
    client: httpx.Client = served["client"]
    first = client.get(f"{served['url']}/dashboard/data")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    data = first.json()
    assert data["totals"]["predictions"] == {"static": STATIC_ROWS, "dynamic": 200}
    assert data["totals"]["store_hits"] == STATIC_ROWS and data["model"]["mode"] == "hybrid"
    assert data["points"] and data["points"][-1]["requests_per_s"] >= 0
    assert data["shadow"]["disagreement"] is not None and data["staleness"]["limit_s"] == 86400.0
    assert {d["column"] for d in data["drift"] if d["kind"] == "input"} == {"f0", "f1", "f2", "f3"}


def test_the_page_is_self_contained(served: dict[str, Any]) -> None:
    """Nothing from anywhere but the server: no URL in the page, and a policy that forbids any."""
    page = served["client"].get(f"{served['url']}/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert "http://www.w3.org/2000/svg" in page.text  # (the SVG namespace, a name, not a fetch)


def test_a_plain_dynamic_server_renders_without_its_absent_monitors(client: httpx.Client) -> None:
    """No store, no reference: the panels say what is not watched, and the page has no error."""
    with LiveServer(create_app(ServeSettings(), add_model(), None)) as server:
        for a in range(5):
            assert client.post(f"{server.url}/v1/models/add:predict",
                               json={"instances": [{"a": a, "b": 1}]}).status_code == 200
        dom = Dom(render(f"{server.url}/dashboard"))
    assert dom.text["errors"] == "" and dom.text["status"].startswith("updated")
    assert dom.text["model"] == "add · version 1 · dynamic" and int(dom.text["total-requests"]) >= 5
    assert int(dom.by_id["chart-latency"]["data-points"]) >= 1
    assert dom.by_id["chart-drift"]["data-bars"] == "0" and "drift is not watched" in dom.text["chart-drift"]
    assert dom.text["staleness"] == "no store version" and dom.by_id["chart-age"]["data-points"] == "0"
    assert dom.text["shadow"].startswith("not checked") and dom.text["hit-ratio"] == "no lookups"


def test_a_watched_server_before_its_first_window_says_so(client: httpx.Client, tmp_path: Path) -> None:
    """A reference and no window compared yet: the drift panel says it is waiting, not that drift is not
    watched (the server counts its windows from 0 only when it watches drift)."""
    pq.write_table(pa.table({"a": np.arange(200.0), "b": np.ones(200)}), tmp_path / "reference.parquet")
    settings = ServeSettings(reference=str(tmp_path / "reference.parquet"))
    with LiveServer(create_app(settings, add_model(), None)) as server:
        assert client.post(f"{server.url}/v1/models/add:predict",
                           json={"instances": [{"a": 1, "b": 1}]}).status_code == 200
        dom = Dom(render(f"{server.url}/dashboard"))
    assert dom.text["errors"] == "" and dom.by_id["chart-drift"]["data-bars"] == "0"
    assert "no window compared yet" in dom.text["chart-drift"]
