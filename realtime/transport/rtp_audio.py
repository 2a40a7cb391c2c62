"""Our audio paths through aiortc: RTP in → jam frames, pre-encoded Opus out → RTP.

aiortc's stock audio path is what not to ship for a jam (``docs/research``: 20 ms frames, a
``JitterBuffer(prefetch=4)`` that never drains after loss, aiortc #543, one decoder thread and
one encoder per peer, #1155). We keep aiortc for ICE, DTLS, SRTP and RTCP and replace both ends:

- **Receive.** :func:`intercept_audio_receiver` replaces one receiver's ``_handle_rtp_packet``
  (on that instance only, so other aiortc users in the process are untouched) with a handler that
  hands ``(sequence, timestamp, payload)`` to :class:`RtpJamConverter`, which turns each packet
  into jam frames for the engine's own jitter buffer. aiortc's jitter buffer and decoder never see
  a packet, and the decoder thread that ``RTCRtpReceiver.receive`` starts is stopped at once.
- **Send.** :class:`PreEncodedOpusTrack` is a track whose ``recv()`` returns ``av.Packet``s:
  ``RTCRtpSender._next_encoded_frame`` then skips its encoder and only calls
  ``OpusEncoder.pack`` (``bytes(packet)`` and ``pts`` converted from ``time_base`` to 1/48000).
  The engine encodes each distinct mix once and every WebRTC and WebSocket listener of that mix
  gets the same Opus bytes.

The aiortc internals used here are listed in ``AIORTC_INTERNALS`` and pinned by
``tests/test_jam_webrtc.py::test_aiortc_internals_we_patch``.

Opus packets are reshaped without decoding where RFC 6716 §3 allows: a packet of several frames
is split into single-frame packets, and consecutive single-frame packets are joined into one
(code 3) packet when a peer's ``minptime`` asks for longer packets. Frames of another length than
the session's block (browsers' and aiortc's 20 ms default) cannot be cut without decoding, so
:class:`RtpJamConverter` decodes those to PCM16 blocks of the session's block size.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import fractions
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from ..jam import frames as jf
from ..jam.opus import load_libopus

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 48000
TIME_BASE: Final = fractions.Fraction(1, SAMPLE_RATE)
MAX_PACKET_SAMPLES: Final = 5760
"""RFC 6716 §3.2.5: a packet holds at most 120 ms of audio."""

AIORTC_INTERNALS: Final = (
    "RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms): called by "
    "RTCDtlsTransport._handle_rtp_data for every SRTP packet routed to the receiver",
    "RTCRtpReceiver.receive(parameters): starts the decoder thread; _handle_disconnect() stops it",
    "RTCRtpSender._next_encoded_frame: a non-Frame from track.recv() goes to encoder.pack(data)",
    "OpusEncoder.pack(packet): bytes(packet), timestamp = pts converted from packet.time_base to 1/48000",
    "RTCRtpTransceiver._codecs: the negotiated codecs, rendered as rtpmap/fmtp in createAnswer()",
    "RTCDtlsTransport._get_stats().packetsReceived: every datagram past ICE (DTLS, SRTP, SRTCP)",
    "aioice.ice.get_host_addresses(use_ipv4, use_ipv6): looked up at each gathering "
    "(only with jam_webrtc_loopback_candidates)",
)


# --------------------------------------------------------------------------------------------
# Opus packet structure (RFC 6716 §3), pure


class OpusPacketError(ValueError):
    """A payload that is not a well-formed Opus packet."""


def toc_frame_samples(toc: int) -> int:
    """Samples per frame at 48 kHz of a TOC byte (§3.1: SILK 10-60 ms, hybrid 10/20, CELT 2.5-20)."""
    config = toc >> 3
    if config < 12:
        return (480, 960, 1920, 2880)[config & 3]
    if config < 16:
        return (480, 960)[config & 1]
    return (120, 240, 480, 960)[config & 3]


def toc_stereo(toc: int) -> bool:
    return bool(toc & 0x04)


def _frame_length(data: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """One §3.2.1 frame length at ``pos``: (length, next position)."""
    if pos >= end:
        raise OpusPacketError("truncated frame length")
    first = data[pos]
    if first < 252:
        return first, pos + 1
    if pos + 1 >= end:
        raise OpusPacketError("truncated two-byte frame length")
    return first + 4 * data[pos + 1], pos + 2


def opus_frames(packet: bytes | memoryview) -> list[memoryview]:
    """The compressed frames of an Opus packet (without TOC), as views of ``packet``.

    Raises :class:`OpusPacketError` for anything §3.4's requirements R1 to R7 reject.
    """
    n = len(packet)
    if n < 1:
        raise OpusPacketError("empty packet")
    view = packet if isinstance(packet, memoryview) else memoryview(packet)
    toc = view[0]
    code = toc & 3
    if code == 0:
        if n - 1 > jf.MAX_OPUS_PAYLOAD:
            raise OpusPacketError("frame longer than 1275 bytes")
        return [view[1:]]
    if code == 1:
        if (n - 1) % 2:
            raise OpusPacketError("code 1 packet with an odd payload length")
        half = (n - 1) // 2
        return [view[1 : 1 + half], view[1 + half :]]
    if code == 2:
        length, pos = _frame_length(view, 1, n)
        if pos + length > n:
            raise OpusPacketError("code 2 first frame overruns the packet")
        return [view[pos : pos + length], view[pos + length :]]
    if n < 2:
        raise OpusPacketError("code 3 packet without a frame count byte")
    count_byte = view[1]
    count = count_byte & 0x3F
    if count == 0 or count * toc_frame_samples(toc) > MAX_PACKET_SAMPLES:
        raise OpusPacketError(f"code 3 packet with {count} frames")
    pos, end = 2, n
    if count_byte & 0x40:  # padding: each 255 adds 254 bytes and another length byte follows
        while True:
            if pos >= end:
                raise OpusPacketError("truncated padding length")
            pad = view[pos]
            pos += 1
            end -= 254 if pad == 255 else pad
            if pad != 255:
                break
        if end < pos:
            raise OpusPacketError("padding longer than the packet")
    frames: list[memoryview] = []
    if count_byte & 0x80:  # VBR: lengths of all frames but the last
        lengths = []
        for _ in range(count - 1):
            length, pos = _frame_length(view, pos, end)
            lengths.append(length)
        for length in lengths:
            if pos + length > end:
                raise OpusPacketError("code 3 frame overruns the packet")
            frames.append(view[pos : pos + length])
            pos += length
        frames.append(view[pos:end])
    else:
        body = end - pos
        if body % count:
            raise OpusPacketError("code 3 CBR payload does not divide into equal frames")
        size = body // count
        for i in range(count):
            frames.append(view[pos + i * size : pos + (i + 1) * size])
    if any(len(f) > jf.MAX_OPUS_PAYLOAD for f in frames):
        raise OpusPacketError("frame longer than 1275 bytes")
    return frames


def split_opus_packet(packet: bytes | memoryview) -> list[bytes]:
    """One single-frame (code 0) packet per frame of ``packet``; a code 0 packet comes back as is."""
    if len(packet) and packet[0] & 3 == 0:
        opus_frames(packet)  # validates
        return [bytes(packet)]
    toc0 = bytes((packet[0] & 0xFC,)) if len(packet) else b""
    return [toc0 + f for f in opus_frames(packet)]


def _length_bytes(length: int) -> bytes:
    if length < 252:
        return bytes((length,))
    first = 252 + (length - 252) % 4
    return bytes((first, (length - first) // 4))


def join_opus_packets(packets: Sequence[bytes]) -> bytes | None:
    """Consecutive single-frame packets as one code 3 packet (§3.2.5), or None when they differ in
    configuration or stereo flag (a TOC must describe every frame of its packet) or are not code 0."""
    if not packets:
        return None
    if len(packets) == 1:
        return packets[0]
    toc = packets[0][0]
    if toc & 3 or any(len(p) < 1 or p[0] != toc for p in packets):
        return None
    if len(packets) * toc_frame_samples(toc) > MAX_PACKET_SAMPLES or len(packets) > 48:
        return None
    sizes = [len(p) - 1 for p in packets]
    head = bytes((toc | 3,))
    if all(s == sizes[0] for s in sizes):
        parts = [head, bytes((len(packets),))]
    else:
        parts = [head, bytes((0x80 | len(packets),)), *(_length_bytes(s) for s in sizes[:-1])]
    parts.extend(p[1:] for p in packets)
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# RTP → jam frames


class Unwrapper:
    """Extends a wrapping counter of ``bits`` bits (RTP sequence 16, timestamp 32) to an unbounded int.

    Each value is placed nearest to the previous one, so reordering within half the range
    is handled and wraps count forward.
    """

    __slots__ = ("_half", "_last", "_mod")

    def __init__(self, bits: int) -> None:
        self._mod = 1 << bits
        self._half = 1 << (bits - 1)
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        last = self._last
        if last is None:
            self._last = value
            return value
        delta = (value - last + self._half) % self._mod - self._half
        out = last + delta
        if delta > 0:
            self._last = out
        return out


@dataclass(slots=True)
class RtpInStats:
    packets: int = 0
    frames_out: int = 0
    malformed: int = 0
    late: int = 0
    decoded: int = 0
    """Packets whose frames are not one block long, decoded to PCM16 blocks (Opus cannot cut them)."""
    lost: int = 0
    """Sequence numbers skipped over (a late packet that arrives after all is not subtracted)."""


class _PcmDecoder:
    """A mono libopus decoder to PCM16, for RTP frames that are not one block long.

    Mono because the engine folds every input to mono before mixing, and libopus downmixes a
    stereo packet itself when the decoder has one channel: half the bytes, no fold here. Uses the
    process-wide libopus handle from :mod:`realtime.jam.opus` (``ctypes.CDLL``: the GIL is
    released during the call).
    """

    def __init__(self) -> None:
        lib = load_libopus()
        err = ctypes.c_int(0)
        handle = lib.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(err))
        if err.value != 0 or not handle:
            raise RuntimeError(f"opus_decoder_create failed ({err.value})")
        self._lib = lib
        self._st: int | None = handle
        self._pcm = np.zeros(MAX_PACKET_SAMPLES, dtype=np.float32)
        self._pcm_ptr = self._pcm.ctypes.data
        self._i16 = np.zeros(MAX_PACKET_SAMPLES, dtype="<i2")

    def decode(self, packet: bytes) -> bytes:
        """The packet's samples as mono little-endian int16."""
        if self._st is None:
            raise RuntimeError("decoder is closed")
        got = int(
            self._lib.opus_decode_float(self._st, packet, len(packet), self._pcm_ptr, MAX_PACKET_SAMPLES, 0)
        )
        if got < 0:
            raise OpusPacketError(f"libopus could not decode the packet (error {got})")
        dst = self._i16[:got]
        np.multiply(np.clip(self._pcm[:got], -1.0, 1.0), 32767.0, out=dst, casting="unsafe")
        return dst.tobytes()

    def close(self) -> None:
        if self._st is not None:
            self._lib.opus_decoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        if getattr(self, "_st", None) is not None:
            self.close()


class RtpJamConverter:
    """Turns RTP Opus packets of one peer into jam frames (sans I/O: packets in, frame bytes out).

    The jam sequence number is derived from the unwrapped RTP *timestamp* in units of ``block``
    samples, not from the RTP sequence number: a packet spanning several blocks then occupies
    several consecutive jam sequence numbers, and a DTX gap or a lost packet shows up as the
    missing blocks it really is, which the engine's jitter buffer conceals. The RTP sequence
    number (unwrapped past 16 bits) counts losses and drops stale duplicates.

    Frames of exactly ``block`` samples pass through as Opus (a multi-frame packet is split
    without decoding): the engine's jitter buffer plays one frame per tick. Any other frame size
    (browsers' and aiortc's 20 ms, or 5 ms frames in a 2.5 ms session) is decoded and re-blocked
    as mono PCM16 jam frames of ``block`` samples (the engine mixes every input as mono).
    A new SSRC or a timestamp jump of over a second starts afresh with the RESYNC flag.
    """

    RESYNC_JUMP: Final = SAMPLE_RATE

    def __init__(self, block: int = 120) -> None:
        if block not in jf.ALLOWED_FRAMES:
            raise ValueError(f"block must be 120, 240 or 480 samples, got {block}")
        self.block = block
        self.stats = RtpInStats()
        self._ssrc: int | None = None
        self._reset()
        self._decoder: _PcmDecoder | None = None

    def _reset(self) -> None:
        self._seq = Unwrapper(16)
        self._ts = Unwrapper(32)
        self._ts_base: int | None = None
        self._last_ts = 0
        self._seq_base = 0  # jam sequence of _ts_base, so a restart continues the jam sequence
        self._resync = True
        self._highest: int | None = None
        self._tail = b""  # decoded samples short of a whole block (mono int16)
        self._tail_ts = 0
        self._opus_channels = 0

    def convert(self, ssrc: int, rtp_seq: int, rtp_ts: int, payload: bytes) -> list[bytes]:
        """Jam frames for one RTP packet (empty for a malformed or stale packet, which is counted)."""
        st = self.stats
        if ssrc != self._ssrc:
            if self._ssrc is not None:
                next_seq = self._next_jam_seq()
                self._reset()
                self._seq_base = next_seq
            self._ssrc = ssrc
        seq = self._seq.unwrap(rtp_seq)
        if self._highest is None or seq > self._highest:
            if self._highest is not None:
                st.lost += seq - self._highest - 1
            self._highest = seq
        elif self._highest - seq > 1024:
            st.late += 1  # far older than any jitter buffer holds: a stale duplicate
            return []
        st.packets += 1
        ts = self._ts.unwrap(rtp_ts)
        if self._ts_base is None:
            self._ts_base = self._last_ts = ts
        elif abs(ts - self._last_ts) > self.RESYNC_JUMP:
            self._seq_base = self._next_jam_seq()
            self._ts_base = ts
            self._resync = True
            self._tail = b""
        if ts > self._last_ts:
            self._last_ts = ts
        if not payload:
            st.malformed += 1
            return []
        samples = toc_frame_samples(payload[0])
        try:
            out = (
                self._opus_frames(ts, payload, samples)
                if samples == self.block
                else self._pcm_frames(ts, payload)
            )
        except OpusPacketError as exc:
            st.malformed += 1
            log.debug("dropping a malformed RTP Opus payload: %s", exc)
            return []
        st.frames_out += len(out)
        return out

    def _next_jam_seq(self) -> int:
        if self._ts_base is None:
            return self._seq_base
        return self._seq_base + (self._last_ts - self._ts_base) // self.block + 1

    def _header(self, codec: int, channels: int, ts: int, frames: int) -> bytes:
        assert self._ts_base is not None
        flags = jf.FLAG_RESYNC if self._resync else 0
        self._resync = False
        seq = self._seq_base + (ts - self._ts_base) // self.block
        return jf.HEADER.pack(
            jf.VERSION, codec, channels, flags, seq & 0xFFFFFFFF, ts & 0xFFFFFFFF, frames, 0
        )

    def _opus_frames(self, ts: int, payload: bytes, samples: int) -> list[bytes]:
        # The channel count is fixed per stream (from its first packet): the engine restarts a
        # sender's decoder and jitter buffer when it changes, and libopus may code single
        # packets of a stereo stream as mono. Its decoder takes either.
        channels = self._opus_channels
        if not channels:
            channels = self._opus_channels = 2 if toc_stereo(payload[0]) else 1
        if payload[0] & 3 == 0:
            if len(payload) - 1 > jf.MAX_OPUS_PAYLOAD:
                raise OpusPacketError("frame longer than 1275 bytes")
            return [self._header(jf.CODEC_OPUS, channels, ts, samples) + payload]
        return [
            self._header(jf.CODEC_OPUS, channels, ts + i * samples, samples) + single
            for i, single in enumerate(split_opus_packet(payload))
        ]

    def _pcm_frames(self, ts: int, payload: bytes) -> list[bytes]:
        if self._decoder is None:
            self._decoder = _PcmDecoder()
        data = self._decoder.decode(payload)
        self.stats.decoded += 1
        # A partial block left by the previous packet joins this one when it is contiguous;
        # after a gap it goes, and the engine's concealment covers the hole.
        if self._tail and ts == self._tail_ts + len(self._tail) // 2:
            data = self._tail + data
            ts = self._tail_ts
        step = self.block * 2
        whole = len(data) // step
        out = [
            self._header(jf.CODEC_PCM16, 1, ts + i * self.block, self.block) + data[i * step : (i + 1) * step]
            for i in range(whole)
        ]
        self._tail = data[whole * step :]
        self._tail_ts = ts + whole * self.block
        return out

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None


# --------------------------------------------------------------------------------------------
# The receive intercept

RtpHandler = Callable[[RtpPacket], None]


def intercept_audio_receiver(receiver: RTCRtpReceiver, handler: RtpHandler, payload_types: set[int]) -> None:
    """Route this receiver's RTP packets of ``payload_types`` to ``handler``, bypassing aiortc's
    jitter buffer and decoder, and stop the decoder thread that ``receive()`` starts.

    Only this receiver instance is changed: the bound methods are shadowed by instance
    attributes, so other peer connections in the process keep the stock path. RTCP (receiver
    reports, sender reports, BYE) still goes through aiortc's ``_handle_rtcp_packet``.
    """
    original_receive = receiver.receive

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        if packet.payload_type in payload_types:
            handler(packet)

    async def receive(parameters: Any) -> None:
        await original_receive(parameters)
        # The thread has just started and waits on an empty queue; stopping it now means no
        # thread per peer. Nothing will ever be queued to it: our handler replaced the caller.
        receiver._handle_disconnect()

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver.receive = receive  # type: ignore[method-assign]


def decoder_thread_running(receiver: RTCRtpReceiver) -> bool:
    """Whether aiortc's per-receiver decoder thread is alive (for tests and stats)."""
    thread = getattr(receiver, "_RTCRtpReceiver__decoder_thread", None)
    return isinstance(thread, threading.Thread) and thread.is_alive()


# --------------------------------------------------------------------------------------------
# The send path: pre-encoded packets into an aiortc sender


class OpusAggregator:
    """Joins ``count`` consecutive single-frame packets into one (for a peer whose ``minptime``
    exceeds the engine's block). Pure: packets in, (packet, first timestamp) out when complete."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.count = count
        self._parts: list[bytes] = []
        self._first_ts = 0
        self._next_ts = 0
        self._samples = 0

    def add(self, payload: bytes, timestamp: int) -> list[tuple[bytes, int]]:
        if self.count == 1:
            return [(payload, timestamp)]
        out: list[tuple[bytes, int]] = []
        samples = toc_frame_samples(payload[0]) if payload else 0
        if self._parts and (
            timestamp != self._next_ts % (1 << 32) or payload[0] != self._parts[0][0] or payload[0] & 3
        ):
            out.extend(self._flush())
        if not self._parts:
            self._first_ts = timestamp
            self._next_ts = timestamp
        self._parts.append(payload)
        self._next_ts += samples
        if len(self._parts) >= self.count:
            out.extend(self._flush())
        return out

    def _flush(self) -> list[tuple[bytes, int]]:
        parts, self._parts = self._parts, []
        joined = join_opus_packets(parts)
        if joined is not None:
            return [(joined, self._first_ts)]
        # Not joinable (mixed configurations): send them one by one rather than lose them.
        out, ts = [], self._first_ts
        for p in parts:
            out.append((p, ts % (1 << 32)))
            ts += toc_frame_samples(p[0]) if p else 0
        return out


class PreEncodedOpusTrack(MediaStreamTrack):
    """An audio track whose ``recv()`` yields already-encoded Opus as ``av.Packet``.

    aiortc's sender then only packetizes (``OpusEncoder.pack``): no encoder runs per peer and no
    20 ms framing is imposed. :meth:`push` never blocks; at most ``max_queue`` packets wait, and
    the oldest is dropped beyond that (a sender that cannot keep up loses old audio, never delays
    the engine). ``pts`` is the jam frame's 48 kHz timestamp, so RTP timestamps follow the
    engine's sample clock.
    """

    kind = "audio"

    def __init__(self, *, max_queue: int = 16) -> None:
        super().__init__()
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque()
        self._max = max_queue
        self._waiter: asyncio.Future[None] | None = None
        self.pushed = 0
        self.dropped = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def push(self, payload: bytes, timestamp: int) -> bool:
        """Queue one packet; False when an older packet had to be dropped to make room."""
        if self.readyState != "live":
            return False
        self.pushed += 1
        ok = True
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.dropped += 1
            ok = False
        self._queue.append((payload, timestamp))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return ok

    async def recv(self) -> av.Packet[Any]:
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        payload, timestamp = self._queue.popleft()
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # wake recv() so the sender's loop sees the end
