"""The binary audio frame codec: layout, validation of every field, zero-copy views, wrap."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime.jam.frames import (
    ALLOWED_FRAMES,
    CODEC_OPUS,
    CODEC_PCM16,
    FLAG_RESYNC,
    HEADER_SIZE,
    MAX_FRAME_BYTES,
    MAX_OPUS_PAYLOAD,
    VERSION,
    FrameError,
    FrameHeader,
    encode_frame,
    frame_sequence,
    pack_header,
    parse_frame,
    seq_diff,
)


def test_header_layout_is_sixteen_big_endian_bytes() -> None:
    header = pack_header(
        codec=CODEC_OPUS,
        channels=2,
        sequence=0x01020304,
        timestamp=0xA0B0C0D0,
        frames=240,
        redundant_len=0x0102,
        flags=FLAG_RESYNC,
    )
    assert HEADER_SIZE == 16
    assert header == bytes([1, 1, 2, 1, 1, 2, 3, 4, 0xA0, 0xB0, 0xC0, 0xD0, 0, 240, 1, 2])


def test_pcm_round_trip_with_zero_copy_views() -> None:
    payload = bytes(range(240)) * 2  # 120 frames x 2 channels x 2 bytes
    redundant = bytes(reversed(payload))
    data = bytearray(
        encode_frame(
            codec=CODEC_PCM16,
            channels=2,
            sequence=7,
            timestamp=840,
            frames=120,
            payload=payload,
            redundant=redundant,
        )
    )
    header, body, red = parse_frame(data)
    assert header == FrameHeader(VERSION, CODEC_PCM16, 2, 0, 7, 840, 120, len(redundant))
    assert not header.resync
    assert bytes(body) == payload
    assert bytes(red) == redundant
    # Views, not copies: they see the caller's buffer.
    data[HEADER_SIZE] = 0xFF
    assert body[0] == 0xFF
    assert isinstance(body, memoryview)
    assert isinstance(red, memoryview)


def test_opus_round_trip_and_memoryview_input() -> None:
    payload = b"\x80" * 40
    frame = encode_frame(
        codec=CODEC_OPUS,
        channels=1,
        sequence=2**32 - 1,
        timestamp=0,
        frames=120,
        payload=payload,
        flags=FLAG_RESYNC,
    )
    header, body, red = parse_frame(memoryview(frame))
    assert header.codec == CODEC_OPUS
    assert header.sequence == 2**32 - 1
    assert header.resync
    assert bytes(body) == payload
    assert len(red) == 0


def test_sequence_and_timestamp_wrap_modulo_u32() -> None:
    frame = encode_frame(
        codec=CODEC_OPUS, channels=1, sequence=2**32 + 5, timestamp=-120, frames=120, payload=b"x"
    )
    header, _, _ = parse_frame(frame)
    assert header.sequence == 5
    assert header.timestamp == 2**32 - 120


def test_reserved_flag_bits_are_ignored_on_read() -> None:
    raw = bytearray(
        encode_frame(codec=CODEC_OPUS, channels=1, sequence=1, timestamp=1, frames=120, payload=b"x")
    )
    raw[3] = 0xFE  # every reserved bit set, RESYNC clear
    header, _, _ = parse_frame(raw)
    assert header.flags == 0
    assert not header.resync
    raw[3] = 0xFF
    assert parse_frame(raw)[0].flags == FLAG_RESYNC


def _raw(
    version: int = 1, codec: int = 1, channels: int = 1, frames: int = 120, red: int = 0, body: bytes = b"x"
) -> bytes:
    return struct.pack("!BBBBIIHH", version, codec, channels, 0, 1, 2, frames, red) + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too_short"),
        (_raw()[:15], "too_short"),
        (_raw(version=2), "bad_version"),
        (_raw(version=0), "bad_version"),
        (_raw(codec=2), "unknown_codec"),
        (_raw(codec=255), "unknown_codec"),
        (_raw(channels=0), "bad_channels"),
        (_raw(channels=3), "bad_channels"),
        (_raw(frames=128), "bad_frames"),
        (_raw(frames=960), "bad_frames"),
        (_raw(body=b""), "empty_payload"),
        (_raw(red=1, body=b"x"), "bad_length"),
        (_raw(red=500, body=b"xy"), "bad_length"),
        (_raw(codec=0, body=b"\x00" * 239), "pcm_size_mismatch"),
        (_raw(codec=0, channels=2, body=b"\x00" * 240), "pcm_size_mismatch"),
        (_raw(codec=0, body=b"\x00" * 240 + b"\x00" * 10, red=10), "pcm_size_mismatch"),
        (_raw(body=b"x" * (MAX_OPUS_PAYLOAD + 1)), "payload_too_long"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as err:
        parse_frame(data)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError)
    assert str(err.value)


def test_opus_redundant_copy_must_be_a_valid_payload_too() -> None:
    ok = _raw(red=3, body=b"payload" + b"red")
    _header, body, red = parse_frame(ok)
    assert bytes(body) == b"payload"
    assert bytes(red) == b"red"
    too_long = _raw(red=MAX_OPUS_PAYLOAD + 1, body=b"p" + b"r" * (MAX_OPUS_PAYLOAD + 1))
    with pytest.raises(FrameError) as err:
        parse_frame(too_long)
    assert err.value.reason == "payload_too_long"


def test_largest_valid_frame_matches_the_documented_bound() -> None:
    pcm = b"\x00" * (480 * 2 * 2)
    frame = encode_frame(
        codec=CODEC_PCM16, channels=2, sequence=0, timestamp=0, frames=480, payload=pcm, redundant=pcm
    )
    assert len(frame) == MAX_FRAME_BYTES
    parse_frame(frame)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"codec": 9}, "unknown_codec"),
        ({"channels": 3}, "bad_channels"),
        ({"frames": 100}, "bad_frames"),
        ({"flags": 0x02}, "bad_field"),
        ({"payload": b""}, "empty_payload"),
        ({"codec": CODEC_PCM16, "payload": b"\x00" * 10}, "pcm_size_mismatch"),
        ({"redundant": b"r" * (MAX_OPUS_PAYLOAD + 1)}, "payload_too_long"),
    ],
)
def test_encode_refuses_what_parse_would_refuse(kwargs: dict[str, object], reason: str) -> None:
    args: dict[str, object] = {
        "codec": CODEC_OPUS,
        "channels": 1,
        "sequence": 0,
        "timestamp": 0,
        "frames": 120,
        "payload": b"p",
    }
    args.update(kwargs)
    with pytest.raises(FrameError) as err:
        encode_frame(**args)  # type: ignore[arg-type]
    assert err.value.reason == reason


def test_pack_header_rejects_oversized_redundant_len() -> None:
    with pytest.raises(FrameError) as err:
        pack_header(codec=CODEC_OPUS, channels=1, sequence=0, timestamp=0, frames=120, redundant_len=70000)
    assert err.value.reason == "bad_field"


def test_seq_diff_is_signed_and_wraps() -> None:
    assert seq_diff(5, 3) == 2
    assert seq_diff(3, 5) == -2
    assert seq_diff(0, 2**32 - 1) == 1
    assert seq_diff(2**32 - 1, 0) == -1
    assert seq_diff(2**31 - 1, 0) == 2**31 - 1
    assert seq_diff(2**31, 0) == -(2**31)


@given(
    codec=st.sampled_from([CODEC_PCM16, CODEC_OPUS]),
    channels=st.sampled_from([1, 2]),
    frames=st.sampled_from(sorted(ALLOWED_FRAMES)),
    sequence=st.integers(0, 2**32 - 1),
    timestamp=st.integers(0, 2**32 - 1),
    flags=st.sampled_from([0, FLAG_RESYNC]),
    with_red=st.booleans(),
    data=st.data(),
)
def test_round_trip_property(
    codec: int,
    channels: int,
    frames: int,
    sequence: int,
    timestamp: int,
    flags: int,
    with_red: bool,
    data: st.DataObject,
) -> None:
    if codec == CODEC_PCM16:
        size = frames * channels * 2
        payload = data.draw(st.binary(min_size=size, max_size=size))
        red = data.draw(st.binary(min_size=size, max_size=size)) if with_red else b""
    else:
        payload = data.draw(st.binary(min_size=1, max_size=MAX_OPUS_PAYLOAD))
        red = data.draw(st.binary(min_size=1, max_size=MAX_OPUS_PAYLOAD)) if with_red else b""
    frame = encode_frame(
        codec=codec,
        channels=channels,
        sequence=sequence,
        timestamp=timestamp,
        frames=frames,
        payload=payload,
        redundant=red,
        flags=flags,
    )
    header, body, redundant = parse_frame(frame)
    assert (
        header.codec,
        header.channels,
        header.sequence,
        header.timestamp,
        header.frames,
        header.flags,
    ) == (codec, channels, sequence, timestamp, frames, flags)
    assert bytes(body) == payload
    assert bytes(redundant) == red


@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_frame_error(data: bytes) -> None:
    try:
        header, body, red = parse_frame(data)
    except FrameError as err:
        reason = err.reason
    else:
        reason = ""
        assert HEADER_SIZE + len(body) + len(red) == len(data)
        assert len(body) > 0
        assert header.version == VERSION
    assert reason in {
        "",
        "too_short",
        "bad_version",
        "unknown_codec",
        "bad_channels",
        "bad_frames",
        "bad_length",
        "empty_payload",
        "pcm_size_mismatch",
        "payload_too_long",
    }


def test_frame_sequence_reads_the_header_without_parsing_the_frame() -> None:
    for seq in (0, 1, 2**31, 2**32 - 1):
        frame = encode_frame(
            codec=CODEC_PCM16, channels=1, sequence=seq, timestamp=7, frames=120, payload=bytes(240)
        )
        assert frame_sequence(frame) == seq == parse_frame(frame)[0].sequence
