from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from starlette.testclient import TestClient

from realtime.app import create_app
from realtime.config import Settings

from .appclient import MakeClient
from .browser_support import CHROMIUM, DIST_INDEX, Person, launch_chromium
from .harness import INTEROP, NodeClient, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser

IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, why: str) -> None:
    """Skip locally when a tool is missing; in CI a missing tool is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires this: {why}")
    pytest.skip(why)


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[MakeClient]:
    """In-process apps (lifespan entered) on a fresh data dir; keyword arguments override Settings."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(data_dir=tmp_path / "data", web_dir=tmp_path / "no-web").replace(**overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: MakeClient) -> TestClient:
    return make_client()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def node_client() -> Iterator[Callable[..., NodeClient]]:
    require(shutil.which("node") is not None, "node is not installed")
    require(
        (INTEROP / "node_modules" / "y-websocket").is_dir(), "run `make interop` to install yjs/y-websocket"
    )
    clients: list[NodeClient] = []

    def make(ws_base: str, session_id: str, token: str | None, name: str = "node") -> NodeClient:
        client = NodeClient(ws_base, session_id, token, name)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for c in clients:
            c.close()


POSTGRES_URL = os.environ.get("ESCENARIO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _pg(sql: str) -> str | None:
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL at {POSTGRES_URL} is unreachable: {exc!r}"
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
    return None


@pytest.fixture(params=["sqlite", "postgres"])
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server process on each backend: SQLite (embedded default) and PostgreSQL."""
    if request.param == "sqlite":
        srv = ServerProcess(tmp_path / "data")
        srv.start()
        try:
            yield srv
        finally:
            srv.kill()
        return
    schema = f"srv_{uuid.uuid4().hex}"
    problem = asyncio.run(_pg(f'CREATE SCHEMA "{schema}"'))
    require(problem is None, problem or "")
    srv = ServerProcess(tmp_path / "data", database_url=f"{POSTGRES_URL}?search_path={schema}")
    try:
        srv.start()
        yield srv
    finally:
        srv.kill()
        asyncio.run(_pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def require_browser() -> None:
    """Chromium, Playwright and the built page, or a skip (a failure in CI)."""
    require(CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make browser` (Debian package chromium)")
    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")
    require(DIST_INDEX.is_file(), "web_client/dist is not built: run `make web`")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    with launch_chromium() as b:
        yield b


@pytest.fixture
def cast(browser: Browser) -> Iterator[list[Person]]:
    """The people a browser test opens; their contexts close (and their console errors are
    printed) when it ends."""
    made: list[Person] = []
    try:
        yield made
    finally:
        for person in made:
            if person.errors:
                print(f"{person.name} console: {person.errors}")
            person.context.close()
