"""WebRTC access to the live jam: Opus packet reshaping, RTP → jam frames, the pre-encoded send
track, SDP handling, the aiortc internals we patch, and real aiortc peers against the app."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import inspect
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.opus import OpusEncoder as AiortcOpusEncoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

from realtime.app import create_app
from realtime.config import Settings
from realtime.jam import frames as jf
from realtime.jam.engine import JamEngine
from realtime.jam.opus import OpusDecoder, OpusEncoder
from realtime.transport import rtp_audio as ra
from realtime.transport.jam_webrtc import (
    JamWebRtc,
    Offer,
    OfferError,
    add_answer_ptime,
    frames_per_packet,
    inspect_offer,
)

from .conftest import require
from .harness import ServerProcess

SR = 48000
ROOT = Path(__file__).resolve().parent.parent


def tone(freq: float, start: int, n: int, amp: float = 0.3) -> np.ndarray[Any, np.dtype[np.float32]]:
    t = (np.arange(n) + start) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def opus_packets(count: int, frames: int = 120, freq: float = 440.0) -> list[bytes]:
    """Single-frame CELT packets from the engine's encoder (stereo, 128 kbit/s CBR)."""
    enc = OpusEncoder(2, frames)
    out = []
    for i in range(count):
        x = tone(freq, i * frames, frames)
        out.append(enc.encode(np.stack([x, x])))
    return out


def opus_20ms_packets(count: int, freq: float = 440.0) -> list[bytes]:
    """20 ms packets as browsers and aiortc send them (PyAV's libopus, default application)."""
    cc = av.CodecContext.create("libopus", "w")
    cc.bit_rate = 96000
    cc.format = "s16"
    cc.layout = "stereo"
    cc.sample_rate = SR
    cc.time_base = fractions.Fraction(1, SR)
    out: list[bytes] = []
    k = 0
    while len(out) < count:
        x = (tone(freq, k * 960, 960) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([x, x], 1).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = SR
        frame.pts = k * 960
        out += [bytes(p) for p in cc.encode(frame)]
        k += 1
    return out[:count]


def dominant_hz(signal: np.ndarray[Any, Any]) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum) * SR / len(signal))


# ----------------------------------------------------------------------------------------------
# Opus packet structure


def test_toc_frame_sizes_cover_silk_hybrid_and_celt() -> None:
    assert ra.toc_frame_samples(0 << 3) == 480  # SILK NB 10 ms
    assert ra.toc_frame_samples(3 << 3) == 2880  # SILK NB 60 ms
    assert ra.toc_frame_samples(13 << 3) == 960  # hybrid SWB 20 ms
    assert ra.toc_frame_samples(16 << 3) == 120  # CELT NB 2.5 ms
    assert ra.toc_frame_samples(31 << 3) == 960  # CELT FB 20 ms
    packet = opus_packets(1)[0]
    assert ra.toc_frame_samples(packet[0]) == 120
    assert ra.toc_stereo(packet[0])


def test_join_and_split_round_trip_real_packets() -> None:
    packets = opus_packets(6)
    joined = ra.join_opus_packets(packets[:4])
    assert joined is not None
    assert joined[0] & 3 == 3
    assert ra.split_opus_packet(joined) == packets[:4]
    # libopus itself reads the joined packet as 4 x 2.5 ms
    dec = OpusDecoder(2, 480)
    block = dec.decode(joined)
    assert block.shape == (2, 480)
    assert ra.split_opus_packet(packets[0]) == [packets[0]]


def test_join_uses_vbr_lengths_when_frames_differ_and_refuses_mixed_tocs() -> None:
    toc = opus_packets(1)[0][0]
    frames = [bytes([toc]) + bytes(i % 256 for i in range(n)) for n in (10, 251, 252, 300, 5)]
    joined = ra.join_opus_packets(frames)
    assert joined is not None
    assert joined[1] & 0x80
    assert ra.split_opus_packet(joined) == frames
    other = bytes([toc ^ 0x04]) + b"\x01\x02"  # stereo flag differs: one TOC cannot describe both
    assert ra.join_opus_packets([frames[0], other]) is None
    assert ra.join_opus_packets([]) is None


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        bytes([0xE5, 1, 2, 3]),  # code 1 with an odd payload: two equal frames impossible
        bytes([0xE6, 200, 1, 2]),  # code 2 first frame overruns
        bytes([0xE7]),  # code 3 without its count byte
        bytes([0xE7, 0x00]),  # code 3 with zero frames
        bytes([0xE7, 0x03, 1, 2, 3, 4]),  # CBR payload of 4 bytes into 3 frames
        bytes([0xE7, 0x42, 200, 1, 2]),  # padding longer than the packet
        bytes([0xE7, 0x82, 252]),  # VBR length truncated
    ],
)
def test_malformed_opus_packets_are_refused(packet: bytes) -> None:
    with pytest.raises(ra.OpusPacketError):
        ra.opus_frames(packet)


def test_code3_padding_is_skipped() -> None:
    toc = opus_packets(1)[0][0] & 0xFC
    body = bytes([toc | 3, 0x40 | 2, 3]) + b"ab" + b"cd" + b"\x00\x00\x00"
    assert [bytes(f) for f in ra.opus_frames(body)] == [b"ab", b"cd"]


# ----------------------------------------------------------------------------------------------
# RTP → jam frames


def test_unwrapper_extends_16_bit_sequences_across_wrap_and_reordering() -> None:
    u = ra.Unwrapper(16)
    assert [u.unwrap(v) for v in (65534, 65535, 0, 1, 65535, 2)] == [65534, 65535, 65536, 65537, 65535, 65538]


def test_converter_passes_block_sized_opus_through_with_timestamp_sequence() -> None:
    packets = opus_packets(5)
    conv = ra.RtpJamConverter(120)
    out = []
    ts0 = 2**32 - 240  # the RTP timestamp wraps inside the run
    for i, p in enumerate(packets):
        out += conv.convert(0xAB, (65534 + i) & 0xFFFF, (ts0 + 120 * i) & 0xFFFFFFFF, p)
    headers = [jf.parse_frame(f) for f in out]
    assert [h.sequence for h, _, _ in headers] == [0, 1, 2, 3, 4]
    assert [h.flags for h, _, _ in headers] == [jf.FLAG_RESYNC, 0, 0, 0, 0]
    assert all(h.codec == jf.CODEC_OPUS and h.frames == 120 and h.channels == 2 for h, _, _ in headers)
    assert [bytes(pl) for _, pl, _ in headers] == packets
    assert headers[2][0].timestamp == 0  # wrapped like RTP
    assert conv.stats.packets == 5
    assert conv.stats.lost == 0


def test_converter_counts_loss_keeps_sequence_on_the_sample_clock_and_drops_stale() -> None:
    packets = opus_packets(6)
    conv = ra.RtpJamConverter(120)
    seqs = []
    for i in (0, 1, 4, 5):  # RTP 2 and 3 lost
        seqs += [jf.parse_frame(f)[0].sequence for f in conv.convert(1, 100 + i, 1000 + 120 * i, packets[i])]
    assert seqs == [0, 1, 4, 5]
    assert conv.stats.lost == 2
    assert conv.convert(1, 100 - 2000, 1000, packets[0]) == []  # long gone: a stale duplicate
    assert conv.stats.late == 1


def test_converter_splits_multi_frame_packets_without_decoding() -> None:
    packets = opus_packets(4)
    joined = ra.join_opus_packets(packets)
    assert joined is not None
    conv = ra.RtpJamConverter(120)
    out = conv.convert(7, 1, 5000, joined)
    assert [jf.parse_frame(f)[0].sequence for f in out] == [0, 1, 2, 3]
    assert [jf.parse_frame(f)[0].timestamp for f in out] == [5000, 5120, 5240, 5360]
    assert [bytes(jf.parse_frame(f)[1]) for f in out] == packets
    assert conv.stats.decoded == 0


def test_converter_decodes_20ms_frames_to_contiguous_pcm_blocks() -> None:
    packets = opus_20ms_packets(12, freq=750.0)
    conv = ra.RtpJamConverter(120)
    out = []
    for i, p in enumerate(packets):
        out += conv.convert(9, i, 960 * i, p)
    headers = [jf.parse_frame(f)[0] for f in out]
    assert len(out) == 12 * 8
    assert all(h.codec == jf.CODEC_PCM16 and h.frames == 120 and h.channels == 1 for h in headers)
    assert [h.sequence for h in headers] == list(range(96))
    pcm = np.concatenate([np.frombuffer(jf.parse_frame(f)[1], "<i2") for f in out]).astype(np.float32)
    assert abs(dominant_hz(pcm[2400:]) - 750.0) < 15  # past the codec's start-up
    assert conv.stats.decoded == 12


def test_converter_resyncs_on_new_ssrc_and_timestamp_jumps() -> None:
    packets = opus_packets(4)
    conv = ra.RtpJamConverter(120)
    first = [jf.parse_frame(f)[0] for f in conv.convert(1, 10, 0, packets[0])]
    jump = [jf.parse_frame(f)[0] for f in conv.convert(1, 11, 10 * SR, packets[1])]
    new_ssrc = [jf.parse_frame(f)[0] for f in conv.convert(2, 500, 77, packets[2])]
    assert first[0].flags == jump[0].flags == new_ssrc[0].flags == jf.FLAG_RESYNC
    # the jam sequence keeps counting forward across both restarts
    assert first[0].sequence < jump[0].sequence < new_ssrc[0].sequence


def test_converter_counts_malformed_payloads() -> None:
    conv = ra.RtpJamConverter(120)
    toc = opus_packets(1)[0][0]
    assert conv.convert(1, 1, 0, b"") == []
    assert conv.convert(1, 2, 120, bytes([toc | 1, 1, 2, 3])) == []  # code 1, odd length
    assert conv.stats.malformed == 2


# ----------------------------------------------------------------------------------------------
# The send path


def test_aggregator_honours_minptime_by_joining_consecutive_blocks() -> None:
    packets = opus_packets(9)
    agg = ra.OpusAggregator(4)
    out: list[tuple[bytes, int]] = []
    for i, p in enumerate(packets[:8]):
        out += agg.add(p, 1000 + 120 * i)
    assert [ts for _, ts in out] == [1000, 1480]
    assert ra.split_opus_packet(out[1][0]) == packets[4:8]
    # a gap in timestamps flushes what is pending rather than gluing across it
    assert agg.add(packets[8], 1000 + 120 * 20) == []
    assert ra.OpusAggregator(1).add(packets[0], 5) == [(packets[0], 5)]


async def test_pre_encoded_track_yields_packets_with_sample_clock_pts_and_drops_oldest() -> None:
    track = ra.PreEncodedOpusTrack(max_queue=2)
    assert track.push(b"a", 100)
    assert track.push(b"b", 220)
    assert not track.push(b"c", 340)  # full: "a" goes
    assert track.dropped == 1
    first = await track.recv()
    assert bytes(first) == b"b"
    assert first.pts == 220
    assert first.time_base == fractions.Fraction(1, SR)
    # aiortc's own packetizer turns it into an RTP payload and a 48 kHz timestamp
    assert AiortcOpusEncoder().pack(first) == ([b"b"], 220)
    assert bytes(await track.recv()) == b"c"
    waiter = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    assert not waiter.done()  # empty: recv() waits for the next push
    track.push(b"d", 460)
    assert bytes(await waiter) == b"d"
    blocked = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await blocked


# ----------------------------------------------------------------------------------------------
# SDP


async def client_offer(*, audio: bool = True, data: bool = True) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            pc.addTransceiver("audio", direction="sendrecv")
        if data:
            pc.createDataChannel("jam-audio", ordered=False, maxRetransmits=0)
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def test_inspect_offer_accepts_audio_and_data_and_reads_ptime() -> None:
    sdp = await client_offer()
    sdp = sdp.replace(
        "a=rtpmap:96 opus/48000/2", "a=rtpmap:96 opus/48000/2\r\na=ptime:20\r\na=maxptime:40", 1
    )
    sdp = sdp.replace("m=application", "a=fmtp:96 minptime=10;useinbandfec=1\r\nm=application", 1)
    offer = inspect_offer(sdp)
    assert offer.has_audio
    assert offer.has_data
    assert (offer.ptime_ms, offer.maxptime_ms, offer.minptime_ms) == (20.0, 40.0, 10.0)
    assert frames_per_packet(offer, 120) == 4  # minptime 10 ms = 4 blocks of 2.5 ms
    assert frames_per_packet(offer, 480) == 1


def test_frames_per_packet_defaults_to_one_block_and_respects_maxptime() -> None:
    base = Offer("", True, False, "sendrecv", None, None, None)
    assert frames_per_packet(base, 120) == 1
    tight = Offer("", True, False, "sendrecv", None, 5.0, 20.0)
    assert frames_per_packet(tight, 120) == 2  # maxptime wins over minptime


async def test_inspect_offer_refuses_what_we_cannot_answer() -> None:
    with pytest.raises(OfferError) as info:
        inspect_offer("hello, I am not SDP")
    assert info.value.code == "invalid_sdp"
    video = (await client_offer(audio=True, data=False)).replace("m=audio", "m=video")
    with pytest.raises(OfferError) as info:
        inspect_offer(video)
    assert info.value.code == "no_media"
    pcmu = (await client_offer(audio=True, data=False)).replace("opus/48000/2", "PCMU/8000")
    with pytest.raises(OfferError) as info:
        inspect_offer(pcmu)
    assert info.value.code == "no_opus"
    no_ice = "\r\n".join(
        line for line in (await client_offer()).split("\r\n") if not line.startswith("a=ice-pwd")
    )
    with pytest.raises(OfferError) as info:
        inspect_offer(no_ice)
    assert info.value.code == "invalid_sdp"


def test_answer_gets_ptime_after_the_audio_rtpmap_only() -> None:
    answer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\n"
        "a=fmtp:96 stereo=1\r\nm=application 9 x\r\n"
    )
    out = add_answer_ptime(answer, 120)
    assert "a=rtpmap:96 opus/48000/2\r\na=ptime:2.5\r\na=maxptime:120\r\na=fmtp" in out
    assert out.count("a=ptime") == 1


# ----------------------------------------------------------------------------------------------
# The aiortc internals we depend on (fail here first when an upgrade moves them)


def test_aiortc_internals_we_patch() -> None:
    import aiortc
    from aiortc.rtcpeerconnection import create_media_description_for_transceiver

    assert aiortc.__version__.startswith("1.16."), (
        f"aiortc {aiortc.__version__}: re-verify rtp_audio.AIORTC_INTERNALS, then update this check"
    )
    params = list(inspect.signature(RTCRtpReceiver._handle_rtp_packet).parameters)
    assert params == ["self", "packet", "arrival_time_ms"]
    assert "receiver._handle_rtp_packet(" in inspect.getsource(RTCDtlsTransport._handle_rtp_data)
    receive_src = inspect.getsource(RTCRtpReceiver.receive)
    assert "threading.Thread" in receive_src
    assert "decoder_worker" in receive_src
    assert "__stop_decoder()" in inspect.getsource(RTCRtpReceiver._handle_disconnect)
    nef = inspect.getsource(RTCRtpSender._next_encoded_frame)
    assert "isinstance(data, Frame)" in nef
    assert ".pack(data)" in nef
    assert "transceiver._codecs" in inspect.getsource(create_media_description_for_transceiver)
    assert "packetsReceived=self.__rx_packets" in inspect.getsource(RTCDtlsTransport._get_stats)
    # jam_webrtc_loopback_candidates swaps this module global, which gathering looks up each time
    import aioice.ice

    assert "get_host_addresses(" in inspect.getsource(aioice.ice.Connection.gather_candidates)


# ----------------------------------------------------------------------------------------------
# Real aiortc client peers


class SineTrack(MediaStreamTrack):
    """A microphone playing a sine: 20 ms s16 stereo frames paced in real time (aiortc encodes
    them at 20 ms on the client side, so the server sees browser-like packets)."""

    kind = "audio"

    def __init__(self, freq: float) -> None:
        super().__init__()
        self.freq = freq
        self._samples = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._samples / SR - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        x = (tone(self.freq, self._samples, 960, amp=0.25) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.stack([x, x], 1).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = SR
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, SR)
        self._samples += 960
        return frame


class Peer:
    """One jam client over WebRTC: RTP audio and/or the jam-audio DataChannel, plus jam-control.

    What it hears is kept as mono float32 at 48 kHz (``heard``), decoded by aiortc's stock
    receiver for RTP and by our Opus decoder for DataChannel frames.
    """

    def __init__(
        self,
        freq: float,
        *,
        rtp: bool = True,
        audio_dc: bool = False,
        send: bool = True,
        monitor: bool = False,
        block: int = 120,
    ) -> None:
        self.freq = freq
        self.block = block
        self.send = send
        self.monitor = monitor
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.heard: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        self.controls: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Future[Any]] = []
        self.dc_frames_in = 0
        self.dc_frames_out = 0
        self.frame_sizes: list[int] = []  # samples per decoded RTP packet
        self.control = self.pc.createDataChannel("jam-control")
        self.control.on("message", lambda m: self.controls.append(json.loads(m)))
        self.audio: Any = None
        if rtp:
            if send:
                self.pc.addTransceiver(SineTrack(freq), direction="sendrecv")
            else:
                self.pc.addTransceiver("audio", direction="recvonly")

            @self.pc.on("track")
            def on_track(track: Any) -> None:
                self.tasks.append(asyncio.ensure_future(self._pull(track)))

        if audio_dc:
            self.audio = self.pc.createDataChannel("jam-audio", ordered=False, maxRetransmits=0)
            self._decoder = OpusDecoder(2, block)
            self.audio.on("message", self._on_audio)

    async def _pull(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frame_sizes.append(frame.samples)
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).astype(np.float32) / 32768
                if self.audio is None or self.audio.readyState != "open":
                    self.heard.append(pcm.mean(axis=1))

    def _on_audio(self, message: Any) -> None:
        header, payload, _ = jf.parse_frame(message)
        self.dc_frames_in += 1
        if header.codec == jf.CODEC_OPUS:
            self.heard.append(self._decoder.decode(bytes(payload)).mean(axis=0).copy())

    async def _send_frames(self) -> None:
        """One jam frame per block on jam-audio (400 a second at 2.5 ms), on an absolute schedule."""
        b = self.block
        enc = OpusEncoder(1, b)
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            while k <= (loop.time() - start) * SR / b and self.audio.readyState == "open":
                payload = enc.encode(tone(self.freq, k * b, b, amp=0.25))
                flags = jf.FLAG_RESYNC if k == 0 else 0
                self.audio.send(
                    jf.encode_frame(
                        codec=jf.CODEC_OPUS,
                        channels=1,
                        sequence=k,
                        timestamp=k * b,
                        frames=b,
                        payload=payload,
                        flags=flags,
                    )
                )
                k += 1
                self.dc_frames_out = k
            await asyncio.sleep(0.002)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await wait_for(lambda: self.pc.connectionState == "connected", 10, "ICE/DTLS to connect")
        await wait_for(lambda: self.control.readyState == "open", 10, "jam-control to open")
        self.control.send(json.dumps({"type": "monitor", "self": self.monitor}))
        if self.audio is not None:
            await wait_for(lambda: self.audio.readyState == "open", 10, "jam-audio to open")
            if self.send:
                self.tasks.append(asyncio.ensure_future(self._send_frames()))

    def heard_s(self) -> float:
        """Seconds of audio received so far."""
        return sum(len(chunk) for chunk in self.heard) / SR

    def recent(self, seconds: float) -> np.ndarray[Any, np.dtype[np.float32]]:
        audio = np.concatenate(self.heard) if self.heard else np.zeros(0, np.float32)
        return audio[-int(seconds * SR) :]

    def level_db(self, freq: float, seconds: float = 1.0) -> float:
        """Level of a ±10 Hz band around ``freq`` in the last ``seconds`` heard (dB, arbitrary ref)."""
        x = self.recent(seconds)
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) / max(1, len(x))
        hz = np.fft.rfftfreq(len(x), 1 / SR)
        band = spectrum[(hz > freq - 10) & (hz < freq + 10)]
        return float(20 * np.log10(band.max() + 1e-12))

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await self.pc.close()


async def wait_for(predicate: Any, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------------------------
# Against the app: in-process (httpx over ASGI, lifespan entered), real aiortc on both ends

FREQS = (520.0, 730.0, 1170.0, 1390.0, 1610.0)  # no one a harmonic of another
# In-process, the server and every client share one Python process (and, on a busy two-core
# machine, much less than one core): these tests run the jam at 10 ms blocks, a quarter of the
# packets. The default 2.5 ms blocks run in the real-server test, where the server has its own
# process, with every kind of client.
APP_BLOCK = 480


class App:
    def __init__(self, app: Any, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http

    @property
    def rtc(self) -> JamWebRtc:
        rtc = self.app.state.jam_webrtc
        assert isinstance(rtc, JamWebRtc)
        return rtc

    @property
    def jam(self) -> Any:
        return self.app.state.services.jam

    async def signup(self, email: str) -> str:
        r = await self.http.post(
            "/api/auth/signup", json={"email": email, "password": "correct horse", "name": email}
        )
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    async def session(self, owner: str, **members: str) -> str:
        """A session of ``owner``; keyword arguments add members: ``editor_token="editor"``."""
        r = await self.http.post("/api/sessions", json={"title": "Jam"}, headers=bearer(owner))
        assert r.status_code == 201, r.text
        sid = str(r.json()["id"])
        for email, role in members.items():
            r = await self.http.post(
                f"/api/sessions/{sid}/members", json={"email": email, "role": role}, headers=bearer(owner)
            )
            assert r.status_code == 201, r.text
        return sid

    async def post_offer(self, sid: str, token: str, sdp: str) -> httpx.Response:
        return await self.http.post(
            f"/api/sessions/{sid}/jam/webrtc",
            content=sdp.encode(),
            headers={**bearer(token), "content-type": "application/sdp"},
        )

    async def join(self, sid: str, token: str, peer: Peer) -> str:
        """POST the peer's offer, apply the answer; returns the Location."""
        r = await self.post_offer(sid, token, await peer.offer())
        assert r.status_code == 201, r.text
        await peer.accept(r.text)
        return str(r.headers["location"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def require_ice_interface() -> None:
    """aioice never offers loopback host candidates: peers on one machine need another interface."""
    from aioice.ice import get_host_addresses

    require(
        bool(get_host_addresses(use_ipv4=True, use_ipv6=True)), "no non-loopback network interface for ICE"
    )


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    require_ice_interface()
    settings = Settings(
        data_dir=tmp_path / "data",
        web_dir=tmp_path / "no-web",
        jam_fade_in_s=0.2,  # tones reach full level quickly; the fade itself is the engine's test
        jam_webrtc_inactivity_s=3.0,
        jam_block=APP_BLOCK,
    )
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield App(application, http)


def engine_of(app: App, sid: str) -> JamEngine:
    engine = app.jam.get(sid)
    assert engine is not None
    assert isinstance(engine, JamEngine)
    return engine


def assert_hears(peer: Peer, others: list[float]) -> None:
    """Every other tone at least 20 dB over the peer's own frequency (self-monitoring is off)."""
    own = peer.level_db(peer.freq)
    for f in others:
        level = peer.level_db(f)
        assert level > own + 20, (
            f"peer {peer.freq:g} Hz: {f:g} Hz at {level:.1f} dB, own tone at {own:.1f} dB"
        )


async def test_webrtc_and_datachannel_peers_hear_the_others_not_themselves(app: App) -> None:
    owner = await app.signup("owner@example.com")
    editor = await app.signup("editor@example.com")
    sid = await app.session(owner, **{"editor@example.com": "editor"})
    rtp_a, rtp_b = Peer(FREQS[0]), Peer(FREQS[1])
    dc = Peer(FREQS[2], rtp=False, audio_dc=True, block=APP_BLOCK)
    peers = [rtp_a, rtp_b, dc]
    try:
        await app.join(sid, owner, rtp_a)
        await app.join(sid, editor, rtp_b)
        await app.join(sid, editor, dc)
        await asyncio.sleep(3.0)
        for p in peers:
            assert_hears(p, [q.freq for q in peers if q is not p])
        # The DataChannel peer gets its mix as jam frames on jam-audio, not over RTP.
        assert dc.dc_frames_in > 100  # a second of mix at 10 ms frames
        dc_side = next(p for p in app.rtc.peers.values() if p.track is None)
        assert dc_side.snapshot()["audioPath"] == "datachannel"
        assert dc_side.stats.dc_audio_out >= dc.dc_frames_in
        # Our receive path replaced aiortc's: no decoder thread, nothing in its jitter buffer.
        for peer in app.rtc.peers.values():
            if peer.transceiver is not None:
                receiver = peer.transceiver.receiver
                assert not ra.decoder_thread_running(receiver)
                assert all(p is None for p in receiver._RTCRtpReceiver__jitter_buffer._packets)  # type: ignore[attr-defined]
                assert peer.converter.stats.decoded > 0  # aiortc clients send 20 ms frames
        stats = engine_of(app, sid).stats_json()
        for participant in stats["participants"]:
            latency = participant["latencyMs"]
            print(f"server-added latency {participant['id']}: {latency}")
            # Measured, not bounded, here: at 10 ms blocks in one shared process the figure is
            # mostly this machine's scheduling. The real-server test bounds it at 2.5 ms blocks.
            assert latency["count"] > 100
            assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
    finally:
        for p in peers:
            await p.close()


async def test_answer_location_and_delete(app: App) -> None:
    owner = await app.signup("owner@example.com")
    editor = await app.signup("editor@example.com")
    other = await app.signup("other@example.com")
    sid = await app.session(owner, **{"editor@example.com": "editor", "other@example.com": "editor"})
    peer = Peer(FREQS[0])
    try:
        r = await app.post_offer(sid, editor, await peer.offer())
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith("application/sdp")
        location = r.headers["location"]
        assert location.startswith(f"/api/sessions/{sid}/jam/webrtc/")
        answer = r.text
        assert re.search(r"a=fmtp:\d+ .*stereo=1", answer)
        assert "sprop-stereo=1" in answer
        assert f"a=ptime:{APP_BLOCK / 48:g}" in answer  # the block: what we would like to receive
        assert "a=candidate:" in answer  # gathered before answering: no trickle
        assert "a=end-of-candidates" in answer
        await peer.accept(answer)
        engine = engine_of(app, sid)
        assert len(engine.participants) == 1
        # jam-control speaks the WebSocket's control messages; the welcome sent at join waited
        # for the channel to open.
        await wait_for(lambda: any(c["type"] == "welcome" for c in peer.controls), 5, "the welcome")
        welcome = next(c for c in peer.controls if c["type"] == "welcome")
        assert welcome["participantId"] == r.headers["jam-participant"]
        assert welcome["block"] == APP_BLOCK
        peer.control.send(json.dumps({"type": "ping", "t": 12.5}))
        await wait_for(lambda: any(c["type"] == "pong" for c in peer.controls), 5, "the pong")
        assert next(c for c in peer.controls if c["type"] == "pong")["t"] == 12.5
        got = await app.http.get(location, headers=bearer(editor))
        assert got.status_code == 200
        assert got.json()["state"] == "connected"
        assert (await app.http.delete(location, headers=bearer(other))).status_code == 403
        assert (await app.http.delete(location, headers=bearer(editor))).status_code == 204
        assert len(engine.participants) == 0
        await wait_for(
            lambda: peer.pc.connectionState in ("closed", "failed"), 10, "the client to see the close"
        )
        assert (await app.http.delete(location, headers=bearer(editor))).status_code == 404
    finally:
        await peer.close()
    # The session owner may end anyone's peer.
    peer = Peer(FREQS[1])
    try:
        location = await app.join(sid, editor, peer)
        assert (await app.http.delete(location, headers=bearer(owner))).status_code == 204
        assert app.rtc.peers == {}
    finally:
        await peer.close()


async def test_signalling_errors_are_clear(app: App) -> None:
    owner = await app.signup("owner@example.com")
    stranger = await app.signup("stranger@example.com")
    sid = await app.session(owner)
    url = f"/api/sessions/{sid}/jam/webrtc"
    offer = await client_offer()

    async def post(body: bytes, token: str | None = owner, ctype: str = "application/sdp") -> httpx.Response:
        headers = {"content-type": ctype, **(bearer(token) if token else {})}
        return await app.http.post(url, content=body, headers=headers)

    def code(r: httpx.Response) -> str:
        return str(r.json()["error"]["code"])

    r = await post(offer.encode(), token=None)
    assert (r.status_code, code(r)) == (401, "not_authenticated")
    r = await post(offer.encode(), token=stranger)
    assert (r.status_code, code(r)) == (404, "session_not_found")
    r = await post(offer.encode(), ctype="application/json")
    assert (r.status_code, code(r)) == (415, "unsupported_media")
    r = await post(b"this is not an offer")
    assert (r.status_code, code(r)) == (400, "invalid_sdp")
    r = await post(b"")
    assert (r.status_code, code(r)) == (400, "invalid_sdp")
    r = await post(b"\xff\xfe v=0")
    assert (r.status_code, code(r)) == (400, "invalid_sdp")
    video_only = (await client_offer(audio=True, data=False)).replace("m=audio", "m=video")
    r = await post(video_only.encode())
    assert (r.status_code, code(r)) == (400, "no_media")
    r = await post(b"v=0\r\n" + b"a=x:" + b"y" * (70 * 1024))
    assert (r.status_code, code(r)) == (413, "body_too_large")
    # Cookie sign-in needs the CSRF header on a POST, as everywhere else.
    app.http.cookies.set("escenario_session", owner)
    try:
        r = await app.http.post(url, content=offer.encode(), headers={"content-type": "application/sdp"})
        assert (r.status_code, code(r)) == (403, "csrf_failed")
    finally:
        app.http.cookies.clear()
    r = await app.http.delete(f"{url}/no-such-peer", headers=bearer(owner))
    assert (r.status_code, code(r)) == (404, "peer_not_found")
    assert app.rtc.peers == {}
    assert app.jam.get(sid) is None  # no failed offer started a jam


async def test_viewer_hears_but_cannot_inject_audio(app: App) -> None:
    owner = await app.signup("owner@example.com")
    viewer_token = await app.signup("viewer@example.com")
    sid = await app.session(owner, **{"viewer@example.com": "viewer"})
    player = Peer(FREQS[0], monitor=True)  # hears itself: proof that its mix is live
    viewer = Peer(FREQS[1])  # sends a tone over RTP like anyone else
    viewer_dc = Peer(FREQS[2], rtp=False, audio_dc=True, block=APP_BLOCK)  # and tries jam-audio
    try:
        await app.join(sid, owner, player)
        r = await app.post_offer(sid, viewer_token, await viewer.offer())
        assert r.status_code == 201
        assert "a=sendonly" in r.text  # the server only sends to a viewer
        await viewer.accept(r.text)
        await asyncio.sleep(2.0)
        assert viewer.level_db(FREQS[0]) > viewer.level_db(FREQS[1]) + 20  # the viewer hears the player
        assert player.level_db(FREQS[1]) < player.level_db(FREQS[0]) - 20  # ... and is never heard
        await app.join(sid, viewer_token, viewer_dc)
        await wait_for(lambda: len(app.rtc.peers) == 2, 5, "the engine to refuse the viewer's frames")

        def said(code: str) -> list[dict[str, Any]]:
            return [c for c in viewer_dc.controls if c.get("type") == "error" and c["code"] == code]

        await wait_for(lambda: bool(said("closed")), 5, "the viewer to be told why it was closed")
        assert said("rejected")
        assert said("closed")[0]["message"].startswith("1008")
        assert player.level_db(FREQS[2]) < player.level_db(FREQS[0]) - 20
        assert len(engine_of(app, sid).participants) == 2  # player and the RTP viewer stay
    finally:
        for p in (player, viewer, viewer_dc):
            await p.close()


async def test_malformed_frames_close_only_that_peer(app: App) -> None:
    owner = await app.signup("owner@example.com")
    sid = await app.session(owner)
    good = Peer(FREQS[0])
    bad = Peer(FREQS[1], rtp=False, audio_dc=True, send=False, block=APP_BLOCK)
    chatty = Peer(FREQS[2], rtp=False, send=False)
    try:
        await app.join(sid, owner, good)
        await app.join(sid, owner, bad)
        await app.join(sid, owner, chatty)
        engine = engine_of(app, sid)
        assert len(engine.participants) == 3
        bad.audio.send(b"\x07" * 40)  # version 7: not a jam frame
        chatty.control.send("{not json")
        await wait_for(lambda: len(engine.participants) == 1, 5, "the bad peers to be closed")
        for peer, close_code in ((bad, "1007"), (chatty, "1007")):
            await wait_for(
                lambda p=peer: p.pc.connectionState in ("closed", "failed"),
                10,
                "a bad peer's connection to close",
            )
            closed = [c for c in peer.controls if c.get("type") == "error" and c["code"] == "closed"]
            assert closed, peer.controls
            assert closed[0]["message"].startswith(close_code)
        before = good.heard_s()
        await asyncio.sleep(1.0)
        assert good.heard_s() - before > 0.5  # the other peer's mix keeps coming
    finally:
        for p in (good, bad, chatty):
            await p.close()


VANISHING_PEER = """
import asyncio, json, sys
from tests.test_jam_webrtc import Peer

async def main():
    peer = Peer(float(sys.argv[1]))
    print(json.dumps({"offer": await peer.offer()}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await peer.accept(json.loads(line)["answer"])
    print(json.dumps({"connected": True}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_peer_vanishing_without_goodbye_is_removed_and_the_others_continue(app: App) -> None:
    owner = await app.signup("owner@example.com")
    sid = await app.session(owner)
    stays = Peer(FREQS[0])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        VANISHING_PEER,
        str(FREQS[3]),
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        await app.join(sid, owner, stays)
        offer = json.loads(await asyncio.wait_for(child.stdout.readline(), 30))["offer"]
        r = await app.post_offer(sid, owner, offer)
        assert r.status_code == 201
        child.stdin.write((json.dumps({"answer": r.text}) + "\n").encode())
        await child.stdin.drain()
        await asyncio.wait_for(child.stdout.readline(), 30)
        await asyncio.sleep(1.5)
        assert stays.level_db(FREQS[3]) > stays.level_db(FREQS[0]) + 20  # it was really jamming
        engine = engine_of(app, sid)
        assert len(engine.participants) == 2
        child.kill()  # SIGKILL: no DTLS close, no RTCP BYE, no SCTP abort
        await child.wait()
        killed_at = asyncio.get_running_loop().time()
        await wait_for(lambda: len(engine.participants) == 1, 10, "the vanished peer to be removed")
        gone_after = asyncio.get_running_loop().time() - killed_at
        assert (
            gone_after < app.rtc.inactivity_s + 2
        )  # the inactivity timeout, not aioice's 30 s consent expiry
        assert len(app.rtc.peers) == 1
        before = stays.heard_s()
        await asyncio.sleep(1.0)
        assert stays.heard_s() - before > 0.5  # its mix keeps coming
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        await stays.close()


async def test_server_shutdown_closes_peer_connections(tmp_path: Path) -> None:
    require_ice_interface()
    settings = Settings(data_dir=tmp_path / "data", web_dir=tmp_path / "no-web")
    application = create_app(settings)
    peer = Peer(FREQS[0])
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                a = App(application, http)
                token = await a.signup("owner@example.com")
                sid = await a.session(token)
                await a.join(sid, token, peer)
                assert len(a.rtc.peers) == 1
            rtc = a.rtc
        assert rtc.peers == {}
        await wait_for(
            lambda: peer.pc.connectionState in ("closed", "failed"), 10, "the client to see the close"
        )
    finally:
        await peer.close()


# ----------------------------------------------------------------------------------------------
# Against a real server process: two WebSocket and two WebRTC players in one jam


class WsPeer:
    """A /jam WebSocket player: 400 Opus frames a second out, the decoded mix in."""

    def __init__(self, freq: float) -> None:
        self.freq = freq
        self.heard: list[np.ndarray[Any, np.dtype[np.float32]]] = []
        self.controls: list[dict[str, Any]] = []
        self.tasks: list[asyncio.Future[Any]] = []
        self._decoder = OpusDecoder(2, 120)
        self.ws: Any = None

    async def connect(self, url: str) -> None:
        import websockets

        self.ws = await websockets.connect(url, max_size=None, compression=None)
        await self.ws.send(json.dumps({"type": "monitor", "self": False}))
        self.tasks.append(asyncio.ensure_future(self._read()))
        self.tasks.append(asyncio.ensure_future(self._send()))

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for message in self.ws:
                if isinstance(message, bytes):
                    header, payload, _ = jf.parse_frame(message)
                    if header.codec == jf.CODEC_OPUS:
                        self.heard.append(self._decoder.decode(bytes(payload)).mean(axis=0).copy())
                else:
                    self.controls.append(json.loads(message))

    async def _send(self) -> None:
        enc = OpusEncoder(1, 120)
        loop = asyncio.get_running_loop()
        start = loop.time()
        k = 0
        while True:
            while k <= (loop.time() - start) * SR / 120:
                payload = enc.encode(tone(self.freq, k * 120, 120, amp=0.25))
                frame = jf.encode_frame(
                    codec=jf.CODEC_OPUS,
                    channels=1,
                    sequence=k,
                    timestamp=k * 120,
                    frames=120,
                    payload=payload,
                )
                await self.ws.send(frame)
                k += 1
            await asyncio.sleep(0.002)

    recent = Peer.recent
    level_db = Peer.level_db

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.ws is not None:
            await self.ws.close()


async def test_websocket_webrtc_and_datachannel_players_jam_in_one_session(tmp_path: Path) -> None:
    """Two WebSocket, two WebRTC (RTP) and one DataChannel player, 2.5 ms blocks."""
    require_ice_interface()
    server = ServerProcess(tmp_path / "data", env={"ESCENARIO_JAM_FADE_IN_S": "0.2"})
    await asyncio.to_thread(server.start)
    players: list[Any] = []
    try:
        owner = await asyncio.to_thread(server.signup, "owner@example.com", "Owner")
        editor = await asyncio.to_thread(server.signup, "editor@example.com", "Editor")
        sid = await asyncio.to_thread(server.create_session, owner)
        await asyncio.to_thread(server.add_member, owner, sid, "editor@example.com", "editor")
        ws_a, ws_b = WsPeer(FREQS[0]), WsPeer(FREQS[1])
        rtc_a, rtc_b = Peer(FREQS[2]), Peer(FREQS[3])
        dc = Peer(FREQS[4], rtp=False, audio_dc=True)  # 2.5 ms jam frames on jam-audio
        players = [ws_a, ws_b, rtc_a, rtc_b, dc]
        ws_url = f"ws://127.0.0.1:{server.port}/jam/{sid}?token="
        await ws_a.connect(ws_url + owner)
        await ws_b.connect(ws_url + editor)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            for peer, token in ((rtc_a, owner), (rtc_b, editor), (dc, editor)):
                r = await http.post(
                    f"/api/sessions/{sid}/jam/webrtc",
                    content=(await peer.offer()).encode(),
                    headers={**bearer(token), "content-type": "application/sdp"},
                )
                assert r.status_code == 201, r.text
                await peer.accept(r.text)
            await asyncio.sleep(3.0)
            for p in players:
                assert_hears(p, [q.freq for q in players if q is not p])
            stats = (await http.get(f"/api/sessions/{sid}/jam/stats", headers=bearer(owner))).json()
        assert len(stats["participants"]) == 5
        for participant in stats["participants"]:
            latency = participant["latencyMs"]
            print(f"server-added latency {participant['id']}: {latency}")
            assert latency["count"] > 200
            # aiortc's stock receive path alone measured 500-600 ms one way on a LAN (aiortc
            # #775); ours is the adaptive jitter buffer plus a tick. Generous, because the other
            # tests on this machine share its two cores and the buffer grows with their jitter.
            assert latency["p50"] < 150
    finally:
        for p in players:
            await p.close()
        server.kill()


async def test_peers_per_user_are_capped(app: App) -> None:
    owner = await app.signup("owner@example.com")
    sid = await app.session(owner)
    app.rtc.max_peers_per_user = 1
    first = await app.post_offer(sid, owner, await client_offer())
    assert first.status_code == 201
    second = await app.post_offer(sid, owner, await client_offer())
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_peers"
    assert (await app.http.delete(first.headers["location"], headers=bearer(owner))).status_code == 204
    third = await app.post_offer(sid, owner, await client_offer())
    assert third.status_code == 201


async def test_rtp_packets_respect_the_peers_minptime(app: App) -> None:
    """A receiver that asks for packets of at least 20 ms gets two 10 ms blocks per packet (one
    Opus code 3 packet, joined without re-encoding), and its decoder plays them."""
    owner = await app.signup("owner@example.com")
    sid = await app.session(owner)
    peer = Peer(FREQS[0], monitor=True)
    try:
        offer = (await peer.offer()).replace(
            "a=rtpmap:96 opus/48000/2", "a=rtpmap:96 opus/48000/2\r\na=fmtp:96 minptime=20", 1
        )
        r = await app.post_offer(sid, owner, offer)
        assert r.status_code == 201
        await peer.accept(r.text)
        server_side = next(iter(app.rtc.peers.values()))
        assert server_side.frames_per_packet == 2
        await asyncio.sleep(1.5)
        sizes = peer.frame_sizes
        # All joined, but for a packet cut short where the engine skipped ticks (a stall resyncs
        # its clock, and a packet never spans a gap).
        assert sizes.count(2 * APP_BLOCK) >= 0.9 * len(sizes) > 50
        assert peer.level_db(FREQS[0]) > -45  # its own tone, through the joined packets
    finally:
        await peer.close()


async def test_loopback_candidates_are_opt_in_and_undone_at_shutdown(tmp_path: Path) -> None:
    import aioice.ice

    original = aioice.ice.get_host_addresses
    assert "127.0.0.1" not in original(True, False)  # aioice skips loopback by design
    settings = Settings(
        data_dir=tmp_path / "data", web_dir=tmp_path / "no-web", jam_webrtc_loopback_candidates=True
    )
    application = create_app(settings)
    peer = Peer(FREQS[0], monitor=True)
    try:
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                a = App(application, http)
                token = await a.signup("owner@example.com")
                sid = await a.session(token)
                r = await a.post_offer(sid, token, await peer.offer())
                assert r.status_code == 201
                assert re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 ", r.text)
                await peer.accept(r.text)
        assert aioice.ice.get_host_addresses is original
    finally:
        await peer.close()
