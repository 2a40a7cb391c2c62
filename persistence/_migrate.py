"""Finds the versioned SQL migrations shipped inside the package.

Each backend applies them itself (the transaction rules differ), but both read them here so
that version numbering and file naming are checked in one place. Files are named
`NNNN_description.sql` under `migrations/<dialect>/`; the number is the version recorded in
`schema_migrations`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import Literal

Dialect = Literal["sqlite", "postgres"]

_FILE_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: Dialect) -> list[Migration]:
    """All migrations of `dialect`, in version order."""
    # Read through importlib.resources so an installed wheel (or a zip) works like a checkout.
    folder = resources.files("persistence") / "migrations" / dialect
    migrations: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            raise ValueError(f"migration file {dialect}/{entry.name} is not named NNNN_name.sql")
        version = int(match["version"])
        if version in migrations:
            raise ValueError(f"two {dialect} migrations have version {version}")
        migrations[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [migrations[version] for version in sorted(migrations)]


def pending(migrations: list[Migration], applied: set[int]) -> list[Migration]:
    """The migrations still to apply; refuses a database migrated by newer code."""
    unknown = applied - {m.version for m in migrations}
    if unknown:
        # Running old code on a newer schema could corrupt data it does not understand.
        raise RuntimeError(
            f"the database has schema versions {sorted(unknown)} that this version of Escenario does not "
            "know; upgrade Escenario instead of downgrading it"
        )
    return [m for m in migrations if m.version not in applied]


def sqlite_statements(script: str) -> list[str]:
    """Split a SQLite script into statements.

    `executescript` would be simpler, but it commits any open transaction first, so a migration
    and its `schema_migrations` row could not be applied atomically. `complete_statement` knows
    SQLite's grammar (trigger bodies, quoted semicolons), unlike a naive split on ';'.
    """
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not _only_comments(buffer):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:80]!r}")
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
