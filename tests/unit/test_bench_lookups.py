"""bench/lookups.py: the open-loop schedule, and its docs section surviving `make bench` rewriting the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.lookups import scheduled_starts, write_section
from bench.report import LOOKUPS_BEGIN, LOOKUPS_END, kept_lookups, render


@pytest.mark.parametrize(
    ("rate_per_s", "duration_s", "expected"),
    [
        (4.0, 1.0, [0.0, 0.25, 0.5, 0.75]),
        (2.0, 1.5, [0.0, 0.5, 1.0]),
        (10.0, 0.0, []),
    ],
)
def test_scheduled_starts(rate_per_s: float, duration_s: float, expected: list[float]) -> None:
    assert scheduled_starts(rate_per_s, duration_s) == expected


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", f"\n\n{LOOKUPS_BEGIN}\nNEW\n{LOOKUPS_END}\n"),
        ("# Benchmarks\n", f"# Benchmarks\n\n{LOOKUPS_BEGIN}\nNEW\n{LOOKUPS_END}\n"),
        (f"# B\n{LOOKUPS_BEGIN}\nOLD\n{LOOKUPS_END}\ntail\n", f"# B\n{LOOKUPS_BEGIN}\nNEW\n{LOOKUPS_END}\ntail\n"),
    ],
)
def test_write_section_appends_or_replaces(tmp_path: Path, before: str, after: str) -> None:
    path = tmp_path / "benchmarks.md"
    if before:
        path.write_text(before)
    write_section(path, "NEW")
    assert path.read_text() == after


def test_make_bench_keeps_the_lookups_section(tmp_path: Path) -> None:
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\nold figures\n")
    write_section(path, "## Live lookups\n\nfigures")
    doc: dict[str, Any] = {
        "machine": {},
        "settings": {},
        "results": {},
        "verdicts": [],
        "command": "python -m bench.run",
    }
    rewritten = render(doc, "analysis", kept_lookups(path))
    assert f"{LOOKUPS_BEGIN}\n## Live lookups\n\nfigures\n{LOOKUPS_END}" in rewritten
    assert kept_lookups(tmp_path / "absent.md") is None
