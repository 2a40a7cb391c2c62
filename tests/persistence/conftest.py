"""Fixtures that run the `Store` contract against every backend.

PostgreSQL comes from ESCENARIO_TEST_POSTGRES_URL (default: the local `test` database). Each
test gets a fresh schema, dropped afterwards. Without a server the PostgreSQL variants are
skipped, except in CI (CI=true), where a missing server is a failure.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from persistence.ports import Store
from persistence.postgres import PostgresStore
from persistence.sqlite import SqliteStore

from .support import Backend, FakeClock

POSTGRES_URL = os.environ.get("ESCENARIO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_postgres_problem: list[str] = []  # memoised, so an absent server costs one timeout per run


async def require_postgres() -> None:
    if not _postgres_problem:
        try:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            _postgres_problem.append(f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc!r}")
        else:
            await conn.close()
            _postgres_problem.append("")
    if _postgres_problem[0]:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{_postgres_problem[0]} (CI=true requires it)", pytrace=False)
        pytest.skip(_postgres_problem[0])


@asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A unique schema name (not created yet), dropped with everything in it at exit."""
    await require_postgres()
    schema = f"t_{uuid.uuid4().hex}"
    try:
        yield schema
    finally:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    async with fresh_schema() as schema:
        yield schema


def _sqlite_backend(path: Path, clock: FakeClock) -> Backend:
    async def execute(sql: str) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA foreign_keys = ON")
            rows = [tuple(row) for row in conn.execute(sql)]
            conn.commit()
            return rows

    return Backend("sqlite", clock, lambda: SqliteStore(path, clock=clock), execute)


def _postgres_backend(schema: str, clock: FakeClock) -> Backend:
    async def execute(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": schema})
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    return Backend(
        "postgres", clock, lambda: PostgresStore(POSTGRES_URL, schema=schema, clock=clock), execute
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    clock = FakeClock()
    if request.param == "sqlite":
        made = _sqlite_backend(tmp_path / "store.db", clock)
        try:
            yield made
        finally:
            await made.close_all()
        return
    async with fresh_schema() as schema:
        made = _postgres_backend(schema, clock)
        try:
            yield made
        finally:
            await made.close_all()


@pytest.fixture
async def store(backend: Backend) -> Store:
    """A migrated store on a fresh database; closed by `backend`."""
    made = backend.make()
    await made.migrate()
    return made
