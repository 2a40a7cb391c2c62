"""Server-to-client WebSocket frames, encoded once and written to many sockets.

Server frames are never masked (RFC 6455 §5.1), so one binary message has the same bytes on
every connection that negotiated no extension. A broadcast can therefore be framed once and
the bytes written to every peer's transport.
"""

from __future__ import annotations

import struct

_FIN_BINARY = 0x82


def binary_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked binary frame carrying `payload`."""
    n = len(payload)
    if n < 126:
        return bytes((_FIN_BINARY, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", _FIN_BINARY, 126, n) + payload
    return struct.pack("!BBQ", _FIN_BINARY, 127, n) + payload
