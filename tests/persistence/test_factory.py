"""`open_store` picks the backend from the database URL; the migration files are well formed."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from persistence._migrate import load_migrations, sqlite_statements
from persistence.factory import open_store
from persistence.postgres import PostgresStore
from persistence.sqlite import SqliteStore

from .conftest import POSTGRES_URL


def _is_empty(folder: Path) -> bool:
    return not any(folder.iterdir())


async def _sqlite_round_trip(url: str, data_dir: Path) -> SqliteStore:
    store = await open_store(url, data_dir=data_dir)
    try:
        assert isinstance(store, SqliteStore)
        user = await store.create_user(email="a@example.com", name="A", password_hash="h")
        assert await store.get_user(user.id) == user
    finally:
        await store.close()
    return store


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "SQLite://"])
async def test_sqlite_defaults_to_the_data_dir(url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "data"  # created on demand
    await _sqlite_round_trip(url, data_dir)
    assert (data_dir / "escenario.db").is_file()


async def test_sqlite_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    await _sqlite_round_trip("sqlite:///db/mine.db", tmp_path / "unused")
    assert (tmp_path / "db" / "mine.db").is_file()
    assert not (tmp_path / "unused").exists()


async def test_sqlite_absolute_path(tmp_path: Path) -> None:
    target = tmp_path / "abs.db"
    await _sqlite_round_trip(f"sqlite:///{target}", tmp_path / "unused")
    assert target.is_file()


async def test_sqlite_in_memory(tmp_path: Path) -> None:
    await _sqlite_round_trip("sqlite:///:memory:", tmp_path)
    assert _is_empty(tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "escenario.db",
        "mysql://user@host/db",
        "redis://localhost",
        "sqlite://host/escenario.db",
        "sqlite:///escenario.db?mode=ro",
    ],
)
async def test_bad_urls_are_rejected(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="URL"):
        await open_store(url, data_dir=tmp_path)
    assert _is_empty(tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_postgres_urls(scheme: str, postgres_schema: str, tmp_path: Path) -> None:
    # Query parameters become server settings, which is how an operator picks a schema.
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE SCHEMA "{postgres_schema}"')
        url = POSTGRES_URL.replace("postgresql://", f"{scheme}://", 1) + f"?search_path={postgres_schema}"
        store = await open_store(url, data_dir=tmp_path)
        try:
            assert isinstance(store, PostgresStore)
            user = await store.create_user(email="a@example.com", name="A", password_hash="h")
            assert await store.get_user(user.id) == user
        finally:
            await store.close()
        tables = await admin.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", postgres_schema
        )
        assert {"users", "crdt_updates", "schema_migrations"} <= {row[0] for row in tables}
    finally:
        await admin.close()
    assert _is_empty(tmp_path)


def test_postgres_schema_names_are_checked() -> None:
    with pytest.raises(ValueError, match="schema name"):
        PostgresStore(POSTGRES_URL, schema='x"; DROP TABLE users; --')


def test_both_backends_ship_the_same_migration_versions() -> None:
    sqlite = load_migrations("sqlite")
    postgres = load_migrations("postgres")
    assert [m.version for m in sqlite] == [m.version for m in postgres]
    assert [m.version for m in sqlite] == list(range(1, len(sqlite) + 1))
    assert [m.name for m in sqlite] == [m.name for m in postgres]


def test_sqlite_statement_splitting() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        UPDATE a SET x = 'y;';
    END;
    -- trailing comment
    """
    statements = sqlite_statements(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER")
    assert statements[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        sqlite_statements("CREATE TABLE b (x TEXT)")
