"""Loads the named queries and numbered migrations shipped as `.sql` files beside this module."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from pathlib import Path

_SQL_DIR = Path(__file__).parent / "sql"
_NAME_RE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION_RE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (comments kept with the statement that follows)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.splitlines(keepends=True):
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            stripped = text.strip()
            if stripped:
                statements.append(stripped)
            current = []
    rest = "".join(current).strip()
    if rest and not all(ln.strip().startswith("--") or not ln.strip() for ln in rest.splitlines()):
        statements.append(rest)
    return statements


@cache
def queries(dialect: str = "sqlite") -> dict[str, str]:
    """Named queries of `sql/queries.sql` (or `sql/<dialect>/queries.sql` for other backends)."""
    path = _SQL_DIR / "queries.sql" if dialect == "sqlite" else _SQL_DIR / dialect / "queries.sql"
    text = path.read_text(encoding="utf-8")
    parts = _NAME_RE.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        out[name] = "\n".join(lines).strip().rstrip(";")
    return out


@cache
def migrations(dialect: str = "sqlite") -> tuple[Migration, ...]:
    """Numbered migrations in order."""
    folder = _SQL_DIR / "migrations" if dialect == "sqlite" else _SQL_DIR / dialect / "migrations"
    found = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if not match:
            continue
        found.append(
            Migration(
                version=int(match.group(1)),
                name=match.group(2),
                statements=tuple(split_statements(path.read_text(encoding="utf-8"))),
            )
        )
    return tuple(found)
