"""`escenario serve --tls-cert/--tls-key`: HTTPS and WSS served directly, with Secure cookies.

The real server runs in a subprocess with a self-signed certificate made in the test; the
client trusts exactly that certificate.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.sync.client import connect

from realtime.cli import tls_options
from realtime.config import Settings
from realtime.session import protocol as p

from .harness import ROOT, free_port


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path)
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    log_path = data / "server.log"
    cmd = [sys.executable, "-m", "realtime.cli", "serve", "--port", str(port), "--data-dir", str(data)]
    cmd += ["--tls-cert", str(cert), "--tls-key", str(key)]
    env = {**os.environ, "ESCENARIO_LOG_FORMAT": "text"}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    context = ssl.create_default_context(cafile=str(cert))
    base = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", verify=context, timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "no healthy TLS server:\n" + log_path.read_text()[-3000:]
            time.sleep(0.05)
        yield base, context
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_server_speaks_https_and_wss_with_secure_cookies(tls_server: tuple[str, ssl.SSLContext]) -> None:
    base, context = tls_server
    with httpx.Client(base_url=base, verify=context, timeout=30) as http:
        r = http.post(
            "/api/auth/signup", json={"email": "tls@example.com", "password": "correct horse", "name": "T"}
        )
        assert r.status_code == 201, r.text
        token = r.json()["token"]
        r = http.post("/api/auth/login", json={"email": "tls@example.com", "password": "correct horse"})
        assert r.status_code == 200
        cookies = r.headers.get_list("set-cookie")
        assert len(cookies) == 2
        assert all("secure" in c.lower() for c in cookies), cookies
        r = http.post(
            "/api/sessions", json={"title": "Over TLS"}, headers={"authorization": f"Bearer {token}"}
        )
        assert r.status_code == 201
        sid = r.json()["id"]
    # WSS: the document sync handshake over TLS.
    wss = base.replace("https://", "wss://")
    with connect(f"{wss}/sync/{sid}?token={token}", ssl=context, max_size=None) as ws:
        assert isinstance(p.decode_message(ws.recv(timeout=10)), p.SyncStep1)  # type: ignore[arg-type]
    # The server does not answer plain HTTP, and a client that does not trust the certificate
    # refuses it.
    with pytest.raises(httpx.HTTPError):
        httpx.get(base.replace("https://", "http://") + "/healthz", timeout=5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/healthz", timeout=5)


def test_tls_flags_go_together_and_must_exist(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    assert tls_options(Settings()) == {}
    assert tls_options(Settings(tls_cert=str(cert), tls_key=str(key))) == {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }
    with pytest.raises(SystemExit, match="go together"):
        tls_options(Settings(tls_cert=str(cert)))
    with pytest.raises(SystemExit, match="no such file"):
        tls_options(Settings(tls_cert=str(cert), tls_key=str(tmp_path / "missing.pem")))
