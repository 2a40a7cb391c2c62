from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.session import protocol as p


@given(st.integers(min_value=0, max_value=2**53))
def test_varuint_round_trip(value: int) -> None:
    encoded = p.write_var_uint(value)
    frame = bytes([p.MSG_SYNC, p.SYNC_STEP1]) + p.write_var_uint(len(encoded)) + encoded
    msg = p.decode_message(frame)
    assert isinstance(msg, p.SyncStep1)
    assert msg.state_vector == encoded


def test_varuint_matches_lib0_encoding() -> None:
    # lib0: 7 bits per byte, least significant group first, high bit = continue.
    assert p.write_var_uint(0) == b"\x00"
    assert p.write_var_uint(127) == b"\x7f"
    assert p.write_var_uint(128) == b"\x80\x01"
    assert p.write_var_uint(300) == b"\xac\x02"


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (p.sync_step1_message(b"\x00"), p.SyncStep1(b"\x00")),
        (p.sync_step2_message(b"\x00\x00"), p.SyncStep2(b"\x00\x00")),
        (p.update_message(b"\x01\x02"), p.SyncUpdate(b"\x01\x02")),
        (p.awareness_message(b"\x00"), p.AwarenessMessage(b"\x00")),
        (b"\x03", p.QueryAwareness()),
        (b"\x02\x00\x00", p.UnknownMessage(2)),
        (b"\x7f", p.UnknownMessage(127)),
    ],
)
def test_decode_known_messages(frame: bytes, expected: p.Message) -> None:
    assert p.decode_message(frame) == expected


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"", "truncated varint"),
        (b"\x80", "truncated varint"),
        (b"\xff" * 9, "varint too long"),
        (b"\x00\x00\x05ab", "past the end"),
        (b"\x00\x07\x00", "unknown sync message subtype"),
        (b"\x01\xff\xff\xff\xff\x0f", "past the end"),
    ],
)
def test_malformed_frames_raise_protocol_error(frame: bytes, why: str) -> None:
    with pytest.raises(p.ProtocolError, match=why):
        p.decode_message(frame)


def test_awareness_round_trip_and_limits() -> None:
    entries = [p.AwarenessEntry(7, 3, '{"user":{"name":"Ana"}}'), p.AwarenessEntry(9, 1, "null")]
    payload = p.encode_awareness(entries)
    assert p.decode_awareness(payload, max_entries=4, max_state_bytes=100) == entries
    with pytest.raises(p.ProtocolError, match="names 2 clients"):
        p.decode_awareness(payload, max_entries=1, max_state_bytes=100)
    with pytest.raises(p.ProtocolError, match="bytes"):
        p.decode_awareness(payload, max_entries=4, max_state_bytes=10)


@pytest.mark.parametrize("state", ["not json", "[1,2]", "42", '"x"'])
def test_awareness_state_must_be_object_or_null(state: str) -> None:
    payload = p.encode_awareness([p.AwarenessEntry(1, 1, state)])
    with pytest.raises(p.ProtocolError):
        p.decode_awareness(payload, max_entries=4, max_state_bytes=100)


@given(st.binary(max_size=64))
def test_decoder_never_raises_anything_but_protocol_error(frame: bytes) -> None:
    try:
        msg = p.decode_message(frame)
    except p.ProtocolError:
        return
    if isinstance(msg, p.AwarenessMessage):
        try:
            p.decode_awareness(msg.payload, max_entries=8, max_state_bytes=1024)
        except p.ProtocolError:
            return
