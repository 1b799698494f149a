"""The HTML report: written, self-contained, with its three plots; and the terminal rendering."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from advise_synthetic import MID, SLOW, measurements, traffic
from rich.console import Console

from augury.advise import Advice, Goals, recommend, write_report
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
