"""Sans-I/O codec for the y-websocket wire protocol (y-protocols sync + awareness).

One WebSocket binary frame carries one message: a lib0 `varUint` message type, then its body.
Integers are lib0 varUints (7 bits per byte, least significant group first); byte strings and
strings are `varUint(len) • bytes`.

pycrdt ships a decoder too, but it reads past the end of a buffer (IndexError), accepts varints
of any length and asserts on truncated input; a server facing the internet needs every
malformed frame to become one clear `ProtocolError`, so the parsing here is strict.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MSG_SYNC = 0
MSG_AWARENESS = 1
MSG_AUTH = 2
MSG_QUERY_AWARENESS = 3

SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2

# lib0 encodes JavaScript numbers; anything above 2**53 cannot come from a real client.
_MAX_VARUINT = 2**53
_MAX_VARUINT_BYTES = 8


class ProtocolError(ValueError):
    """A frame that is not a well-formed y-protocols message."""


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    payload: bytes


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    """Message type 3: the client asks for every current awareness state."""


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A message type this server does not handle (logged and ignored, as y-websocket does)."""

    type: int


Message = SyncStep1 | SyncStep2 | SyncUpdate | AwarenessMessage | QueryAwareness | UnknownMessage


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state_json: str  # "null" means the client is gone

    @property
    def removed(self) -> bool:
        return self.state_json == "null"


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def var_uint(self) -> int:
        buf = self.buf
        value = 0
        shift = 0
        for i in range(_MAX_VARUINT_BYTES):
            pos = self.pos + i
            if pos >= len(buf):
                raise ProtocolError("truncated varint")
            byte = buf[pos]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos + 1
                if value > _MAX_VARUINT:
                    raise ProtocolError("varint out of range")
                return value
            shift += 7
        raise ProtocolError("varint too long")

    def var_bytes(self) -> bytes:
        n = self.var_uint()
        end = self.pos + n
        if end > len(self.buf):
            raise ProtocolError("length prefix runs past the end of the frame")
        out = self.buf[self.pos : end]
        self.pos = end
        return out

    def var_string(self) -> str:
        try:
            return self.var_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not UTF-8") from exc


def write_var_uint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varuint must be non-negative")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def decode_message(frame: bytes) -> Message:
    """Parse one frame. Raises `ProtocolError` for anything malformed."""
    reader = _Reader(frame)
    msg_type = reader.var_uint()
    if msg_type == MSG_SYNC:
        sub = reader.var_uint()
        body = reader.var_bytes()
        if sub == SYNC_STEP1:
            return SyncStep1(body)
        if sub == SYNC_STEP2:
            return SyncStep2(body)
        if sub == SYNC_UPDATE:
            return SyncUpdate(body)
        raise ProtocolError(f"unknown sync message subtype {sub}")
    if msg_type == MSG_AWARENESS:
        return AwarenessMessage(reader.var_bytes())
    if msg_type == MSG_QUERY_AWARENESS:
        return QueryAwareness()
    return UnknownMessage(msg_type)


def decode_awareness(payload: bytes, *, max_entries: int, max_state_bytes: int) -> list[AwarenessEntry]:
    """Parse an awareness update; every state must be a JSON object or `null`."""
    reader = _Reader(payload)
    count = reader.var_uint()
    if count > max_entries:
        raise ProtocolError(f"awareness update names {count} clients (limit {max_entries})")
    entries = []
    for _ in range(count):
        client_id = reader.var_uint()
        clock = reader.var_uint()
        state_json = reader.var_string()
        if len(state_json) > max_state_bytes:
            raise ProtocolError(f"awareness state of {len(state_json)} bytes (limit {max_state_bytes})")
        if state_json != "null":
            try:
                state: Any = json.loads(state_json)
            except ValueError as exc:
                raise ProtocolError("awareness state is not JSON") from exc
            if not isinstance(state, dict):
                raise ProtocolError("awareness state must be a JSON object or null")
        entries.append(AwarenessEntry(client_id, clock, state_json))
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    parts = [write_var_uint(len(entries))]
    for e in entries:
        parts.append(write_var_uint(e.client_id))
        parts.append(write_var_uint(e.clock))
        parts.append(write_var_bytes(e.state_json.encode("utf-8")))
    return b"".join(parts)


_SYNC_STEP1_PREFIX = bytes([MSG_SYNC, SYNC_STEP1])
_SYNC_STEP2_PREFIX = bytes([MSG_SYNC, SYNC_STEP2])
_SYNC_UPDATE_PREFIX = bytes([MSG_SYNC, SYNC_UPDATE])
_AWARENESS_PREFIX = bytes([MSG_AWARENESS])


def sync_step1_message(state_vector: bytes) -> bytes:
    return _SYNC_STEP1_PREFIX + write_var_bytes(state_vector)


def sync_step2_message(update: bytes) -> bytes:
    return _SYNC_STEP2_PREFIX + write_var_bytes(update)


def update_message(update: bytes) -> bytes:
    return _SYNC_UPDATE_PREFIX + write_var_bytes(update)


def awareness_message(payload: bytes) -> bytes:
    return _AWARENESS_PREFIX + write_var_bytes(payload)
