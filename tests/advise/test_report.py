"""The HTML report: written, self-contained, with its three plots; and the terminal rendering."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import replace
from pathlib import Path

import pytest
from advise_synthetic import MID, SLOW, measurements, traffic
from rich.console import Console

from augury.advise import Advice, Goals, recommend, write_report
from augury.advise.advice import measured_rows
from augury.advise.overheads import BUILT_IN
from augury.advise.stalls import Pauses
from augury.errors import InputError


@pytest.fixture(scope="module")
def hybrid() -> Advice:
    return recommend(measurements(MID, 1_000_000, traffic(0.9)), Goals(1000, 100, 86_400, 2))


def _images(text: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)]


def test_report_is_self_contained_with_three_plots(tmp_path: Path, hybrid: Advice) -> None:
    path = write_report(hybrid, tmp_path / "out")
    assert path == tmp_path / "out" / "advice.html"
    text = path.read_text(encoding="utf-8")
    images = _images(text)
    assert len(images) == 3 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in images)
    for title in ("Latency by batch size", "Coverage by catalogue size", "Predicted latency by request rate"):
        assert title in text
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE)  # nothing external
    assert "<script" not in text and "<link" not in text
    assert "hybrid" in text and hybrid.summary.split(":")[0] in text
    assert '"mode": "hybrid"' in text  # the numbers, as JSON
    assert "Every mode" in text and "hybrid *" in text and "verified before served" in text


def test_report_without_traffic_still_has_three_plots(tmp_path: Path) -> None:
    advice = recommend(measurements(SLOW, 1000), Goals(100, 200, 3600, 2))
    text = write_report(advice, tmp_path).read_text(encoding="utf-8")
    assert len(_images(text)) == 3 and "static" in text


def test_report_folder_that_cannot_be_made(tmp_path: Path, hybrid: Advice) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot create the report folder"):
        write_report(hybrid, tmp_path / "file" / "sub")


def test_render_reads_as_a_summary(hybrid: Advice) -> None:
    console = Console(width=120, record=True)
    console.print(hybrid.render())
    text = console.export_text()
    assert "Recommendation: HYBRID" in text and "--max-batch-size" in text
    assert "examples to precompute" in text and "Why" in text and "Limits" in text
    assert "Every mode" in text and "cost per day" in text and "worst staleness" in text
    assert "built-in estimates" in text  # which overheads the prediction used


@pytest.fixture(scope="module")
def calibrated() -> Advice:
    """Advice on calibrated overheads whose pauses were measured on a server of the model, with a note."""
    serving = replace(BUILT_IN, source="calibrated (/tmp/cal.json)", calibrated=True, path="/tmp/cal.json",
                      notes=("the machine's load changed while calibration ran",))
    serving = serving.with_model_pauses(Pauses(0.0426, (0.37e-3, 0.5e-3)),
                                        "measured on a server of this model (4.26% of requests, p50 0.37 ms;"
                                        " 665 requests at 320 and 3,222 at 1,548 req/s)")
    m = replace(measurements(MID, 1_000_000, traffic(0.9)), serving=serving)
    return recommend(m, Goals(1000, 100, 86_400, 2))


def test_report_has_the_rows_measured_on_this_machine(tmp_path: Path, calibrated: Advice) -> None:
    # issue 15 review: the HTML left out the server's own work, its pauses and calibration's notes
    advice = calibrated
    text = write_report(advice, tmp_path).read_text(encoding="utf-8")
    rows = dict(measured_rows(advice))
    assert {"server's own work", "server's pauses under load", "calibration note"} <= set(rows)
    assert "Measured on this machine" in text
    for name, value in measured_rows(advice):
        assert f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" in text


def test_the_pauses_row_says_their_share_once(calibrated: Advice) -> None:
    # issue 15 review: "4.26 % of requests: measured on a server of this model (4.26% of requests, ..."
    row = dict(measured_rows(calibrated))["server's pauses under load"]
    assert row.startswith("measured on a server of this model") and row.count("of requests") == 1, row
    tiny = replace(BUILT_IN, calibrated=True, pauses_inline=Pauses(0.01, (1e-4,)),
                   pauses_hop=Pauses(0.01, (1e-4,)))
    advice = recommend(replace(measurements(MID, 1000), serving=tiny), Goals(100, 100, 86_400, 2))
    row = dict(measured_rows(advice))["server's pauses under load"]
    assert row == "1 % of requests: the calibration server's (a tiny model)", row
