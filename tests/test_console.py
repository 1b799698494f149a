"""What the command line prints is printed as it is: square brackets in text that is not ours stay."""

from __future__ import annotations

from rich.console import Console

from augury import console


def test_table_cells_and_titles_are_not_markup() -> None:
    recorder = Console(record=True, width=200)
    recorder.print(console.table("model [v2]", ["name [unit]"], [["[[inputs]]"], ["[bold]x[/]"]]))
    text = recorder.export_text()
    for shown in ("model [v2]", "name [unit]", "[[inputs]]", "[bold]x[/]"):
        assert shown in text


def test_plain_text_inside_markup_is_printed_as_it_is() -> None:
    recorder = Console(record=True, width=200)
    recorder.print(f"[bold]{console.plain('declare them as [[inputs]] tables')}[/]")
    assert recorder.export_text().strip() == "declare them as [[inputs]] tables"
