"""Worker processes of one server add their metrics up through a shared directory."""

from __future__ import annotations

import multiprocessing
import os
import re
from pathlib import Path

from augury.monitor import ServeMetrics

ROUTE = "/v1/models/{name}:predict"


def _value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert match, f"{sample} not in:\n{text}"
    return float(match.group(1))


def _worker(share_dir: str, requests: int, in_flight: int) -> None:
    metrics = ServeMetrics(share_dir=share_dir)
    for _ in range(requests):
        metrics.observe_request(ROUTE, "POST", 200, 0.002, None)
    metrics.observe_predictions(0, requests, 0.002)
    metrics.requests_in_flight = in_flight
    metrics.share()


def test_a_scrape_gives_every_workers_counts_and_the_live_workers_gauges(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_worker, args=(str(tmp_path), 7, 5))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert (tmp_path / f"{child.pid}.json").exists()

    mine = ServeMetrics(share_dir=str(tmp_path))
    for _ in range(3):
        mine.observe_request(ROUTE, "POST", 200, 0.02, None)
    mine.observe_request(ROUTE, "POST", 400, 0.001, "SchemaError")
    mine.requests_in_flight = 2
    text = mine.render()[0].decode()

    assert _value(text, f'augury_requests_total{{method="POST",route="{ROUTE}",status="200"}}') == 10
    assert _value(text, f'augury_requests_total{{method="POST",route="{ROUTE}",status="400"}}') == 1
    assert _value(text, f'augury_request_duration_seconds_count{{route="{ROUTE}"}}') == 11
    assert _value(text, f'augury_request_duration_seconds_bucket{{le="0.0025",route="{ROUTE}"}}') == 8
    assert _value(text, 'augury_predictions_total{source="dynamic"}') == 7
    assert _value(text, "augury_requests_in_flight") == 2  # the child is gone: its gauge is not counted
    assert (tmp_path / f"{os.getpid()}.json").exists()  # a scrape shares this process's state too


def test_without_a_share_dir_a_process_reports_its_own_counts(tmp_path: Path) -> None:
    (tmp_path / "123.json").write_text('{"pid": 123, "families": {}}')
    metrics = ServeMetrics()
    metrics.observe_request(ROUTE, "POST", 200, 0.002, None)
    assert not metrics.sharing
    text = metrics.render()[0].decode()
    assert _value(text, f'augury_requests_total{{method="POST",route="{ROUTE}",status="200"}}') == 1


def test_unreadable_or_foreign_files_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "999999.json").write_text("{not json")
    (tmp_path / "notes.json").write_text('["a list"]')
    metrics = ServeMetrics(share_dir=str(tmp_path))
    metrics.observe_request(ROUTE, "POST", 200, 0.002, None)
    text = metrics.render()[0].decode()
    assert _value(text, f'augury_requests_total{{method="POST",route="{ROUTE}",status="200"}}') == 1
