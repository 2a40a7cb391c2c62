"""In-process app helpers shared by the HTTP tests (Starlette's TestClient, no sockets)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.testclient import TestClient

from realtime.services import Services

MakeClient = Callable[..., TestClient]
PASSWORD = "correct horse"


def services(client: TestClient) -> Services:
    svc = client.app.state.services  # type: ignore[attr-defined]
    assert isinstance(svc, Services)
    return svc


def signup(client: TestClient, email: str = "ana@example.com", name: str = "Ana") -> str:
    r = client.post("/api/auth/signup", json={"email": email, "password": PASSWORD, "name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}
