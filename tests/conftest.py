from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import INTEROP, NodeClient, ServerProcess

IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, why: str) -> None:
    """Skip locally when a tool is missing; in CI a missing tool is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires this: {why}")
    pytest.skip(why)


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
