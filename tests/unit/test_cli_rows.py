"""What a list command prints: its rows as one JSON array with `--json`, else a table of terminal-safe cells."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from rich.console import Console

from relay import cli

COLUMNS = ("id", "name", "size")
ROWS: list[dict[str, Any]] = [
    {"id": 1, "name": "a [bold]b[/bold] \x1b[2J :smile:", "size": None},
    {"id": 2, "name": "plain", "size": 3},
]


def cells(row: dict[str, Any]) -> tuple[object, ...]:
    return row["id"], row["name"], row["size"]


def table_rows(out: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")][1:-1] for line in out.splitlines() if line.startswith("│")]


def test_json_is_the_rows_alone(capsys: pytest.CaptureFixture[str]) -> None:
    cli._print_rows(ROWS, True, COLUMNS, cells, wide=False, count="2 row(s)")
    out = capsys.readouterr().out
    assert orjson.loads(out) == ROWS
    assert "row(s)" not in out


def test_table_shows_every_cell_literally_then_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    cli._print_rows(ROWS, False, COLUMNS, cells, wide=False, count="2 row(s)")
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert table_rows(out) == [["1", "a [bold]b[/bold] \\x1b[2J :smile:", ""], ["2", "plain", "3"]]
    assert out.splitlines()[-1] == "2 row(s)"


def test_no_rows_is_a_table_of_headers_and_no_count_unless_given(capsys: pytest.CaptureFixture[str]) -> None:
    cli._print_rows([], False, COLUMNS, cells, wide=False)
    out = capsys.readouterr().out
    assert table_rows(out) == []
    assert "name" in out
    assert out.splitlines()[-1].startswith("└")


@pytest.mark.parametrize("wide", [False, True])
def test_piped_tables_are_never_cut(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, wide: bool
) -> None:
    monkeypatch.setattr(cli, "console", Console(width=60))  # not a terminal: piped
    long_name = "n" * 200
    cli._print_rows([{"id": 1, "name": long_name, "size": 1}], False, COLUMNS, cells, wide=wide)
    out = capsys.readouterr().out
    assert long_name in out
    assert max(len(line) for line in out.splitlines()) > 200
