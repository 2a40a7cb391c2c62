"""WebRTC peers of a live jam: one aiortc peer connection per participant, WHIP-style.

A client POSTs an SDP offer; :meth:`JamWebRtc.open` answers it (ICE gathered first, no
trickle) and joins the session's jam engine with a :class:`WebRtcSink`. Audio travels two ways:

- **RTP** (an ``m=audio`` section): Opus, stereo negotiated. Inbound packets are intercepted
  before aiortc's jitter buffer (:func:`rtp_audio.intercept_audio_receiver`) and become jam
  frames for the engine; the engine's Opus packets go out through a
  :class:`rtp_audio.PreEncodedOpusTrack` (no per-peer encoder), joined into longer packets only
  when the peer's ``minptime`` demands it.
- **DataChannels** the client opens: ``jam-audio`` (unordered, no retransmits) carries jam frames
  both ways, exactly as the WebSocket's binary messages; ``jam-control`` carries the JSON control
  messages. While ``jam-audio`` is open the mix goes over it instead of RTP, and inbound RTP is
  ignored (one input path at a time, so the engine's jitter buffer sees one sequence space).

A peer leaves on DELETE, on ICE/DTLS failure or close, when it was never connected within
``connect_timeout_s``, and when nothing at all (audio, control, RTCP, SCTP) arrived for
``inactivity_s`` (three times that for a receive-only RTP peer, whose only traffic is RTCP):
consent freshness alone would take aioice 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from ..jam import frames as jf
from ..jam.control import ControlError, Leave, error_message, parse_control
from ..jam.engine import EngineFull, InputRejected, JamEngine
from ..jam.sessions import JamSessions
from . import rtp_audio
from .limits import TokenBucket

log = logging.getLogger(__name__)

AUDIO_LABEL: Final = "jam-audio"
CONTROL_LABEL: Final = "jam-control"
MAX_SDP_BYTES: Final = 64 * 1024
_MAX_PENDING_CONTROL: Final = 64
_MAX_DC_BACKLOG: Final = 64 * 1024  # bytes queued on jam-audio before new frames are dropped
_WATCHDOG_PERIOD_S: Final = 0.5
_RTT_EVERY: Final = 4  # watchdog rounds between RTT reports to the engine


# --------------------------------------------------------------------------------------------
# SDP (pure)


class OfferError(ValueError):
    """An offer we cannot answer. ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: str
    has_audio: bool
    has_data: bool
    audio_direction: str | None
    ptime_ms: float | None
    maxptime_ms: float | None
    minptime_ms: float | None


_ATTR_MS = re.compile(r"^a=(ptime|maxptime):\s*([0-9]+(?:\.[0-9]+)?)\s*$")


def inspect_offer(text: str) -> Offer:
    """Parse and check an offer: it must carry Opus audio or a DataChannel section.

    Raises :class:`OfferError` (``invalid_sdp``, ``no_media``, ``no_opus``).
    """
    if not text.lstrip().startswith("v=0"):
        raise OfferError("invalid_sdp", "the body is not an SDP offer (it must start with v=0)")
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise OfferError("invalid_sdp", f"the SDP offer could not be parsed: {exc}") from exc
    audio = [m for m in parsed.media if m.kind == "audio"]
    data = [m for m in parsed.media if m.kind == "application"]
    if not audio and not data:
        raise OfferError(
            "no_media", "the offer has neither an audio section nor a DataChannel (application) section"
        )
    for m in parsed.media:
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise OfferError("invalid_sdp", f"the {m.kind} section has no ICE credentials")
        if m.dtls is None or not m.dtls.fingerprints:
            raise OfferError("invalid_sdp", f"the {m.kind} section has no DTLS fingerprint")
    if len(audio) > 1:
        raise OfferError("invalid_sdp", "the offer has more than one audio section")
    ptime = maxptime = minptime = None
    direction = None
    if audio:
        m = audio[0]
        opus = [c for c in m.rtp.codecs if c.mimeType.lower() == "audio/opus" and c.clockRate == 48000]
        if not opus:
            raise OfferError("no_opus", "the audio section does not offer Opus at 48 kHz")
        direction = m.direction
        raw_min = opus[0].parameters.get("minptime")
        minptime = float(raw_min) if isinstance(raw_min, (int, float)) else None
        ptime, maxptime = _section_ptimes(text)
    return Offer(
        sdp=text,
        has_audio=bool(audio),
        has_data=bool(data),
        audio_direction=direction,
        ptime_ms=ptime,
        maxptime_ms=maxptime,
        minptime_ms=minptime,
    )


def _section_ptimes(text: str) -> tuple[float | None, float | None]:
    """``a=ptime`` and ``a=maxptime`` of the audio section (aiortc's parser drops both)."""
    ptime = maxptime = None
    in_audio = False
    for line in text.splitlines():
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
            continue
        if in_audio:
            match = _ATTR_MS.match(line.strip())
            if match:
                value = float(match.group(2))
                if match.group(1) == "ptime":
                    ptime = value
                else:
                    maxptime = value
    return ptime, maxptime


def frames_per_packet(offer: Offer, block: int) -> int:
    """How many engine blocks to put in each RTP packet: the smallest packet the peer accepts.

    ``minptime`` (Opus fmtp) is the shortest packet a receiver wants; ``maxptime`` the longest.
    ``ptime`` is only a preference (RFC 4566) and does not bind us. Without either bound one block
    per packet is legal Opus RTP (RFC 7587 allows 2.5 ms frames).
    """
    block_ms = block * 1000 / rtp_audio.SAMPLE_RATE
    count = 1
    if offer.minptime_ms is not None and offer.minptime_ms > block_ms:
        count = int(-(-offer.minptime_ms // block_ms))
    if offer.maxptime_ms is not None and count * block_ms > offer.maxptime_ms:
        count = max(1, int(offer.maxptime_ms // block_ms))
    return max(1, min(count, rtp_audio.MAX_PACKET_SAMPLES // block))


def add_answer_ptime(sdp: str, block: int) -> str:
    """Add ``a=ptime`` (the block: what we would like to receive) and ``a=maxptime:120`` to the
    answer's audio section; aiortc's serializer has no field for either."""
    ms = block * 1000 / rtp_audio.SAMPLE_RATE
    value = f"{ms:g}"
    lines = sdp.split("\r\n")
    out: list[str] = []
    in_audio = False
    added = False
    for i, line in enumerate(lines):
        out.append(line)
        if line.startswith("m="):
            in_audio = line.startswith("m=audio")
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if in_audio and not added and line.startswith("a=rtpmap:") and not nxt.startswith("a=rtcp-fb:"):
            out.extend([f"a=ptime:{value}", "a=maxptime:120"])
            added = True
    return "\r\n".join(out)


# --------------------------------------------------------------------------------------------
# Peers


class PeerState(enum.Enum):
    NEW = "new"  # answered, ICE/DTLS not yet up
    CONNECTED = "connected"
    CLOSED = "closed"


_ALLOWED: Final = {
    PeerState.NEW: {PeerState.CONNECTED, PeerState.CLOSED},
    PeerState.CONNECTED: {PeerState.CLOSED},
    PeerState.CLOSED: set[PeerState](),
}


@dataclass(slots=True)
class PeerStats:
    rtp_in: int = 0
    rtp_ignored: int = 0  # RTP audio that arrived while jam-audio was the input path
    dc_audio_in: int = 0
    control_in: int = 0
    rtp_out: int = 0
    rtp_out_dropped: int = 0
    dc_audio_out: int = 0
    dc_audio_out_dropped: int = 0
    not_connected_dropped: int = 0
    non_opus_dropped: int = 0

    def to_json(self) -> dict[str, int]:
        """camelCase keys, like every other jam stats object on the wire."""
        out = {}
        for name in self.__slots__:
            head, *rest = name.split("_")
            out[head + "".join(w.capitalize() for w in rest)] = getattr(self, name)
        return out


# The engine hands the same frame object to every listener of a mix in turn: strip the header
# once per frame, not once per listener. Holding the reference keeps the identity check sound.
_last_frame: bytes | None = None
_last_split: tuple[bytes, int, int] = (b"", 0, 0)


def _opus_payload(frame: bytes) -> tuple[bytes, int, int]:
    """(payload, timestamp, codec) of an outbound jam frame, without its redundant copy."""
    global _last_frame, _last_split
    if frame is _last_frame:
        return _last_split
    _, codec, _, _, _, ts, _, red = jf.HEADER.unpack_from(frame)
    end = len(frame) - red
    split = (frame[jf.HEADER_SIZE : end], ts, codec)
    _last_frame, _last_split = frame, split
    return split


@dataclass(eq=False)
class JamPeer:
    """One WebRTC participant. Its engine-facing half is :class:`WebRtcSink`."""

    id: str
    session_id: str
    user_id: str
    can_send: bool
    pc: RTCPeerConnection
    block: int
    offer: Offer
    frames_per_packet: int = 1
    state: PeerState = PeerState.NEW
    participant_id: str = ""
    track: rtp_audio.PreEncodedOpusTrack | None = None
    transceiver: RTCRtpTransceiver | None = None
    audio_channel: RTCDataChannel | None = None
    control_channel: RTCDataChannel | None = None
    created_at: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    close_reason: str = ""
    stats: PeerStats = field(default_factory=PeerStats)
    converter: rtp_audio.RtpJamConverter = field(init=False)
    aggregator: rtp_audio.OpusAggregator = field(init=False)
    request_close: Callable[[JamPeer, str], None] = lambda _peer, _reason: None
    engine: JamEngine | None = None
    frame_budget: TokenBucket | None = None
    _pending_control: list[str] = field(default_factory=list)
    _rx_datagrams: int = 0

    def __post_init__(self) -> None:
        self.converter = rtp_audio.RtpJamConverter(self.block)
        self.aggregator = rtp_audio.OpusAggregator(self.frames_per_packet)

    def move_to(self, state: PeerState) -> None:
        if state not in _ALLOWED[self.state]:
            raise RuntimeError(
                f"peer {self.id}: {self.state.value} -> {state.value} is not a valid transition"
            )
        self.state = state

    @property
    def closed(self) -> bool:
        return self.state is PeerState.CLOSED

    @property
    def audio_channel_open(self) -> bool:
        ch = self.audio_channel
        return ch is not None and ch.readyState == "open"

    # inbound -----------------------------------------------------------------------------

    def end(self, code: int, reason: str) -> None:
        """Close this peer as the WebSocket would close its socket: ``jam-control`` gets an
        ``error`` with code ``closed`` and the WebSocket close code and reason, then the peer
        connection closes (``docs/jam-protocol.md``)."""
        if self.closed:
            return
        self.send_control(error_message("closed", f"{code} {reason}"))
        self.request_close(self, f"{code} {reason}")

    def _reject(self, exc: InputRejected) -> None:
        """The engine refused our input: tell the client why, then end this peer only."""
        self.send_control(error_message("rejected", exc.reason))
        self.end(exc.close_code, exc.reason)

    def on_rtp(self, packet: RtpPacket) -> None:
        self.last_activity = time.monotonic()
        engine = self.engine
        if engine is None or self.closed:
            return
        if self.audio_channel_open:
            self.stats.rtp_ignored += 1
            return
        self.stats.rtp_in += 1
        try:
            for frame in self.converter.convert(
                packet.ssrc, packet.sequence_number, packet.timestamp, packet.payload
            ):
                if self._over_budget():
                    return
                engine.receive(self.participant_id, frame)
        except InputRejected as exc:
            self._reject(exc)

    def _over_budget(self) -> bool:
        budget = self.frame_budget
        if budget is None or budget.take():
            return False
        self._reject(InputRejected(1008, "audio frame rate limit exceeded"))
        return True

    def on_audio_message(self, message: bytes | str) -> None:
        self.last_activity = time.monotonic()
        engine = self.engine
        if engine is None or self.closed:
            return
        self.stats.dc_audio_in += 1
        if isinstance(message, str):
            self._reject(InputRejected(1003, "jam-audio carries binary jam frames, not text"))
            return
        if self._over_budget():
            return
        try:
            engine.receive(self.participant_id, message)
        except InputRejected as exc:
            self._reject(exc)

    def on_control_message(self, message: bytes | str) -> None:
        self.last_activity = time.monotonic()
        engine = self.engine
        if engine is None or self.closed:
            return
        self.stats.control_in += 1
        try:
            msg = parse_control(message)
        except ControlError as exc:
            self.send_control(error_message(exc.code, exc.message))
            self.end(exc.close_code, exc.message)
            return
        if isinstance(msg, Leave):
            self.request_close(self, "left")
            return
        for reply in engine.control(self.participant_id, msg):
            self.send_control(reply)

    # outbound ----------------------------------------------------------------------------

    def send_control(self, text: str) -> bool:
        ch = self.control_channel
        if ch is not None and ch.readyState == "open":
            ch.send(text)
            return True
        # Before the channel opens (the welcome is sent at join): keep the latest few.
        self._pending_control.append(text)
        del self._pending_control[:-_MAX_PENDING_CONTROL]
        return True

    def flush_control(self) -> None:
        ch = self.control_channel
        if ch is None or ch.readyState != "open":
            return
        pending, self._pending_control = self._pending_control, []
        for text in pending:
            ch.send(text)

    def send_audio(self, frames: Sequence[bytes]) -> bool:
        if self.closed:
            return False
        if self.state is not PeerState.CONNECTED:
            self.stats.not_connected_dropped += len(frames)
            return True
        ch = self.audio_channel
        if ch is not None and ch.readyState == "open":
            # Unordered and unreliable, but still under SCTP's congestion window: a backlog means
            # the path cannot carry the stream, and old audio is worthless.
            if ch.bufferedAmount > _MAX_DC_BACKLOG:
                self.stats.dc_audio_out_dropped += len(frames)
                return False
            for frame in frames:
                ch.send(frame)
            self.stats.dc_audio_out += len(frames)
            return True
        track = self.track
        if track is None:
            self.stats.not_connected_dropped += len(frames)
            return True
        for frame in frames:
            payload, ts, codec = _opus_payload(frame)
            if codec != jf.CODEC_OPUS:
                self.stats.non_opus_dropped += 1
                continue
            for packet, first_ts in self.aggregator.add(payload, ts):
                if track.push(packet, first_ts):
                    self.stats.rtp_out += 1
                else:
                    self.stats.rtp_out_dropped += 1
        # RTP over UDP gives no back-pressure: a full send queue means our own event loop did not
        # get to the sender (a server stall), not that the peer is slow. The track dropped the
        # oldest audio; never report the peer as a laggard, or a stall would eject healthy peers.
        return True

    def datagrams_received(self) -> int:
        """Datagrams past ICE on this peer's transports (DTLS, SRTP, SRTCP): RTCP and SCTP count."""
        total = 0
        transports = {t.receiver.transport for t in self.pc.getTransceivers()}
        if self.pc.sctp is not None:
            transports.add(self.pc.sctp.transport)
        for dtls in transports:
            for stat in dtls._get_stats().values():
                total += int(getattr(stat, "packetsReceived", 0) or 0)
        return total

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "participantId": self.participant_id,
            "userId": self.user_id,
            "state": self.state.value,
            "canSend": self.can_send,
            "audioPath": "datachannel" if self.audio_channel_open else ("rtp" if self.track else "none"),
            "framesPerPacket": self.frames_per_packet,
            "audioChannel": None
            if self.audio_channel is None
            else {
                "state": self.audio_channel.readyState,
                "ordered": self.audio_channel.ordered,
                "maxRetransmits": self.audio_channel.maxRetransmits,
            },
            **self.stats.to_json(),
            # After the counters: their `rtpIn` (a packet count) must not replace this breakdown.
            "rtpIn": {
                "packets": self.converter.stats.packets,
                "lost": self.converter.stats.lost,
                "late": self.converter.stats.late,
                "malformed": self.converter.stats.malformed,
                "decoded": self.converter.stats.decoded,
                "frames": self.converter.stats.frames_out,
            },
        }


class WebRtcSink:
    """The engine's handle on a WebRTC peer (the AudioSink contract)."""

    __slots__ = ("_peer",)

    def __init__(self, peer: JamPeer) -> None:
        self._peer = peer

    def send_audio(self, frames: Sequence[bytes]) -> bool:
        return self._peer.send_audio(frames)

    def send_control(self, text: str) -> None:
        self._peer.send_control(text)

    def close(self, code: int, reason: str) -> None:
        self._peer.end(code, reason)


# --------------------------------------------------------------------------------------------
# The registry


class PeerLimitReached(Exception):
    pass


def _ice_servers(urls: Sequence[str]) -> list[RTCIceServer]:
    return [RTCIceServer(urls=u) for u in urls if u]


_aioice_host_addresses: Callable[[bool, bool], list[str]] | None = None


def loopback_candidates(enabled: bool) -> None:
    """Offer 127.0.0.1 as an ICE host candidate, process-wide (opt-in, for a loopback-only
    network namespace: aioice skips loopback addresses, so without another interface no peer
    could connect). Replaces ``aioice.ice.get_host_addresses``, which aioice looks up at each
    gathering; ``enabled=False`` puts the original back."""
    global _aioice_host_addresses
    import aioice.ice

    if enabled and _aioice_host_addresses is None:
        original = aioice.ice.get_host_addresses
        _aioice_host_addresses = original

        def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            addresses = original(use_ipv4, use_ipv6)
            if use_ipv4 and "127.0.0.1" not in addresses:
                addresses.append("127.0.0.1")
            return addresses

        aioice.ice.get_host_addresses = with_loopback
    elif not enabled and _aioice_host_addresses is not None:
        aioice.ice.get_host_addresses = _aioice_host_addresses  # type: ignore[assignment]
        _aioice_host_addresses = None


class JamWebRtc:
    """All WebRTC jam peers of this process: open, look up, close, watchdog."""

    def __init__(
        self,
        engines: JamSessions,
        *,
        ice_servers: Sequence[str] = (),
        inactivity_s: float = 5.0,
        connect_timeout_s: float = 20.0,
        max_peers_per_user: int = 8,
        frames_per_second: float = 2000.0,
        loopback: bool = False,
    ) -> None:
        self._engines = engines
        self._ice_servers = list(ice_servers)
        self.inactivity_s = inactivity_s
        self.connect_timeout_s = connect_timeout_s
        self.max_peers_per_user = max_peers_per_user
        self.frames_per_second = frames_per_second
        self._peers: dict[str, JamPeer] = {}
        self._closing: dict[str, asyncio.Task[bool]] = {}
        self._opening: dict[str, int] = {}  # user id -> offers being answered right now
        self._watchdog: asyncio.Task[None] | None = None
        self._shut = False
        self._loopback = loopback
        if loopback:
            loopback_candidates(True)

    @property
    def peers(self) -> dict[str, JamPeer]:
        return self._peers

    def get(self, peer_id: str) -> JamPeer | None:
        return self._peers.get(peer_id)

    async def open(
        self, session_id: str, user_id: str, name: str, *, can_send: bool, offer_sdp: str
    ) -> tuple[JamPeer, str]:
        """Answer ``offer_sdp`` and join the session's jam. Returns the peer and the SDP answer.

        Raises :class:`OfferError` for an offer we cannot answer, :class:`PeerLimitReached`, and
        :class:`~realtime.jam.engine.EngineFull` (the jam is full or the server is shutting down).
        """
        if self._shut:
            raise EngineFull("the server is shutting down")
        offer = inspect_offer(offer_sdp)
        mine = self._opening.get(user_id, 0)
        mine += sum(1 for p in self._peers.values() if p.user_id == user_id and not p.closed)
        if mine >= self.max_peers_per_user:
            raise PeerLimitReached(f"you already have {mine} WebRTC jam connections")
        self._opening[user_id] = self._opening.get(user_id, 0) + 1
        try:
            return await self._open(session_id, user_id, name, can_send, offer)
        finally:
            left = self._opening.pop(user_id) - 1
            if left:
                self._opening[user_id] = left

    async def _open(
        self, session_id: str, user_id: str, name: str, can_send: bool, offer: Offer
    ) -> tuple[JamPeer, str]:
        # Negotiate before touching the registry: acquire() starts a tick thread, which only a
        # leaving participant stops, so it must be followed by a join with no await between.
        block = self._engines.config.block
        pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=_ice_servers(self._ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
            )
        )
        peer = JamPeer(
            id=secrets.token_urlsafe(12),
            session_id=session_id,
            user_id=user_id,
            can_send=can_send,
            pc=pc,
            block=block,
            offer=offer,
            frames_per_packet=frames_per_packet(offer, block),
            request_close=self._close_soon,
            frame_budget=TokenBucket(self.frames_per_second, self.frames_per_second),
        )
        try:
            answer = await self._negotiate(peer, offer)
            try:
                engine = self._engines.acquire(session_id)
            except RuntimeError as exc:  # the registry is closing
                raise EngineFull(str(exc)) from exc
            participant = engine.join(user_id, name, can_send=can_send, sink=WebRtcSink(peer))
        except BaseException:
            await pc.close()
            raise
        peer.engine = engine
        peer.participant_id = participant.pid
        self._peers[peer.id] = peer
        self._ensure_watchdog()
        log.info(
            "jam webrtc peer opened",
            extra={"peer": peer.id, "session": session_id, "audio": offer.has_audio, "data": offer.has_data},
        )
        return peer, answer

    async def _negotiate(self, peer: JamPeer, offer: Offer) -> str:
        pc = peer.pc
        if offer.has_audio:
            peer.track = rtp_audio.PreEncodedOpusTrack()
            # Viewers answer sendonly: their RTP has no receiver to reach.
            transceiver = pc.addTransceiver(peer.track, direction="sendrecv" if peer.can_send else "sendonly")
            opus = [
                c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"
            ]
            transceiver.setCodecPreferences(opus)
            peer.transceiver = transceiver

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            self._adopt_channel(peer, channel)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected" and peer.state is PeerState.NEW:
                peer.move_to(PeerState.CONNECTED)
                peer.last_activity = time.monotonic()
            elif state in ("failed", "closed"):
                self._close_soon(peer, f"connection {state}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError / OperationError / InternalError ...
            raise OfferError("invalid_sdp", f"the offer cannot be applied: {exc}") from exc
        if peer.transceiver is not None:
            self._configure_audio(peer, peer.transceiver)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)  # gathers every candidate first: no trickle ICE
        local = pc.localDescription
        return add_answer_ptime(local.sdp, peer.block) if offer.has_audio else local.sdp

    def _configure_audio(self, peer: JamPeer, transceiver: RTCRtpTransceiver) -> None:
        opus_types: set[int] = set()
        for codec in transceiver._codecs:
            if codec.mimeType.lower() == "audio/opus":
                # What we send is stereo and we accept stereo (RFC 7587 §7.1); rendered in the answer.
                codec.parameters = {**codec.parameters, "stereo": 1, "sprop-stereo": 1}
                if codec.payloadType is not None:
                    opus_types.add(codec.payloadType)
        if peer.can_send:
            rtp_audio.intercept_audio_receiver(transceiver.receiver, peer.on_rtp, opus_types)

    def _adopt_channel(self, peer: JamPeer, channel: RTCDataChannel) -> None:
        if channel.label == AUDIO_LABEL:
            if peer.audio_channel is not None and peer.audio_channel.readyState == "open":
                channel.close()
                return
            peer.audio_channel = channel
            channel.on("message", peer.on_audio_message)

            @channel.on("close")
            def on_close() -> None:
                if peer.audio_channel is channel:
                    peer.audio_channel = None
                    peer.converter = rtp_audio.RtpJamConverter(peer.block)  # back to RTP: resync

        elif channel.label == CONTROL_LABEL:
            if peer.control_channel is not None and peer.control_channel.readyState == "open":
                channel.close()
                return
            peer.control_channel = channel
            channel.on("message", peer.on_control_message)
            channel.on("open", peer.flush_control)
            peer.flush_control()
        else:
            channel.close()

    # closing -------------------------------------------------------------------------------

    def _close_soon(self, peer: JamPeer, reason: str) -> None:
        """Close from a synchronous context (event handlers, the engine's sink.close)."""
        if peer.closed or peer.id in self._closing:
            return
        task = asyncio.get_running_loop().create_task(self.close(peer.id, reason))
        self._closing[peer.id] = task
        task.add_done_callback(lambda _t: self._closing.pop(peer.id, None))

    async def close(self, peer_id: str, reason: str = "closed") -> bool:
        """Leave the engine and close the peer connection; False for an unknown peer."""
        peer = self._peers.pop(peer_id, None)
        if peer is None or peer.closed:
            return False
        peer.move_to(PeerState.CLOSED)
        peer.close_reason = reason
        if peer.engine is not None:
            try:
                peer.engine.leave(peer.participant_id)
            except Exception:
                log.exception("jam engine leave failed", extra={"peer": peer.id})
        if peer.track is not None:
            peer.track.stop()
        peer.converter.close()
        try:
            await peer.pc.close()
        except Exception:
            log.exception("closing a jam peer connection failed", extra={"peer": peer.id})
        log.info("jam webrtc peer closed", extra={"peer": peer.id, "reason": reason})
        return True

    async def close_all(self) -> None:
        self._shut = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None
        await asyncio.gather(*(self.close(pid, "server shutting down") for pid in list(self._peers)))
        if self._closing:
            await asyncio.gather(*self._closing.values(), return_exceptions=True)
        if self._loopback:
            loopback_candidates(False)

    # watchdog -------------------------------------------------------------------------------

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        rounds = 0
        while self._peers:
            await asyncio.sleep(_WATCHDOG_PERIOD_S)
            self.check_liveness(time.monotonic())
            rounds += 1
            if rounds % _RTT_EVERY == 0:
                await self._report_rtt()

    async def _report_rtt(self) -> None:
        """Hand the engine each RTP peer's round trip time, which aiortc's sender measures from
        the peer's RTCP receiver reports (DataChannel-only clients measure theirs with pings)."""
        for peer in list(self._peers.values()):
            transceiver = peer.transceiver
            if peer.state is not PeerState.CONNECTED or transceiver is None:
                continue
            with contextlib.suppress(Exception):  # stats of a connection that is closing
                report = await transceiver.sender.getStats()
                for stat in report.values():
                    rtt = getattr(stat, "roundTripTime", None)
                    if isinstance(rtt, float) and peer.engine is not None and not peer.closed:
                        peer.engine.set_rtt(peer.participant_id, rtt * 1000)

    def check_liveness(self, now: float) -> None:
        """Close peers that never connected or went silent on every path."""
        for peer in list(self._peers.values()):
            if peer.closed:
                continue
            if peer.state is PeerState.NEW:
                if now - peer.created_at > self.connect_timeout_s:
                    self._close_soon(peer, "never connected")
                continue
            count = peer.datagrams_received()
            if count != peer._rx_datagrams:
                peer._rx_datagrams = count
                peer.last_activity = max(peer.last_activity, now)
            limit = self.inactivity_limit(peer)
            if now - peer.last_activity > limit:
                self._close_soon(peer, f"nothing received for {limit:g} s")

    def inactivity_limit(self, peer: JamPeer) -> float:
        """How long ``peer`` may stay silent. A sender streams audio, and a DataChannel peer's
        SCTP acknowledges our audio every few packets; a receive-only RTP peer sends only RTCP
        reports, every 5 s or more in browsers (randomised up to 7.5 s): it gets three times
        as long."""
        if peer.can_send or peer.pc.sctp is not None:
            return self.inactivity_s
        return 3 * self.inactivity_s
