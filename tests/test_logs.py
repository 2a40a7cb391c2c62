"""Server log lines: tokens are redacted and client addresses truncated before they leave the process."""

from __future__ import annotations

import io
import json
import logging

import pytest

from realtime.logs import AnonymiseAddresses, JsonFormatter, RedactSecrets, anonymise_addresses


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.77:51234 - GET /api/me", "203.0.113.0:51234 - GET /api/me"),
        ("client 10.1.2.3 and 192.168.0.254", "client 10.1.2.0 and 192.168.0.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348 connected", "2001:db8:85a3:: connected"),
        ("no address in 3.14 or version 1.2.3", "no address in 3.14 or version 1.2.3"),
    ],
)
def test_addresses_are_truncated(raw: str, expected: str) -> None:
    assert anonymise_addresses(raw) == expected


def test_an_access_log_line_reaches_stderr_with_neither_token_nor_full_address() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    handler.addFilter(AnonymiseAddresses())
    logger = logging.getLogger("test.access")
    logger.handlers[:] = [handler]
    logger.propagate = False
    # The shape of uvicorn.access's record: the address comes in through the arguments.
    logger.warning(
        '%s - "%s %s HTTP/%s" %d', "198.51.100.23:40000", "GET", "/sync/abc?token=sekrit", "1.1", 101
    )
    line = json.loads(stream.getvalue())
    assert "198.51.100.23" not in line["msg"]
    assert "198.51.100.0:40000" in line["msg"]
    assert "sekrit" not in line["msg"]
    assert "token=***" in line["msg"]
