"""libopus through ctypes, shaped for the jam tick: fixed small frames, preallocated buffers.

PyAV's codec API allocates frames, packets and planes per call and only speaks 20 ms-ish
frame sizes through its container layer; the tick needs 120/240/480-sample CELT frames at 400
packets per second per participant with no per-packet object churn. So this binds libopus
directly: every encoder and decoder owns its ctypes input/output buffers and numpy views of
them, and a call allocates nothing but the one ``bytes`` it returns (encode) or nothing at all
(decode, which returns a view valid until the next call).

The library comes from PyAV's wheel (``av.libs/libopus-*.so*``, BSD licensed), falling back to
a system ``libopus``. It is loaded with :class:`ctypes.CDLL`, which releases the GIL for the
duration of every foreign call, so codec work can run in parallel with the asyncio loop
(``tests/jam/test_opus.py`` checks this against a GIL-holding ``PyDLL`` control).

The jam tick asks for the opposite (``hold_gil=True``: the same library through
:class:`ctypes.PyDLL`). A 2.5 ms stereo decode takes about 10 µs; releasing and re-taking the GIL
around each of them lets the event loop's thread in between, and CPython hands the GIL back to
a waiting thread only when the holder blocks or after the 5 ms switch interval, so every
release could delay the tick by whole blocks. Holding it makes a tick one short, predictable
stretch of CPU, and the loop gets the GIL back as soon as the tick sleeps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import threading
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ALLOWED_FRAMES",
    "SAMPLE_RATE",
    "OpusDecoder",
    "OpusEncoder",
    "OpusError",
    "OpusUnavailable",
    "float_to_pcm16",
    "libopus_version",
    "load_libopus",
    "packet_samples",
    "packet_samples_table",
    "pcm16_to_float",
]

SAMPLE_RATE: Final = 48000
ALLOWED_FRAMES: Final = frozenset({120, 240, 480})
MAX_PACKET: Final = 1275  # RFC 6716 §3.2.1: the largest single-frame packet

# opus_defines.h
_OK: Final = 0
_APPLICATION_RESTRICTED_LOWDELAY: Final = 2051
_SET_BITRATE: Final = 4002
_SET_VBR: Final = 4006
_SET_COMPLEXITY: Final = 4010
_SET_PACKET_LOSS_PERC: Final = 4014
_GET_LOOKAHEAD: Final = 4027
_RESET_STATE: Final = 4028
_SET_SIGNAL: Final = 4024
_SIGNAL_MUSIC: Final = 3002


class OpusUnavailable(RuntimeError):
    """No libopus could be found (neither PyAV's bundled copy nor a system library)."""


class OpusError(ValueError):
    """libopus refused a call. ``code`` is the (negative) libopus error code."""

    def __init__(self, code: int, what: str) -> None:
        self.code = code
        super().__init__(f"{what}: {_strerror(code)} (opus error {code})")


_lib: ctypes.CDLL | None = None
_lib_gil: ctypes.PyDLL | None = None
_lib_path = ""
_lib_lock = threading.Lock()


def _candidates() -> list[str]:
    found: list[str] = []
    spec = importlib.util.find_spec("av")
    if spec is not None and spec.origin is not None:
        site = os.path.dirname(os.path.dirname(spec.origin))
        # auditwheel puts the vendored libraries next to the package, hash-suffixed.
        found += sorted(glob.glob(os.path.join(site, "av.libs", "libopus*.so*")))
        found += sorted(glob.glob(os.path.join(site, "av", ".dylibs", "libopus*.dylib")))
    system = ctypes.util.find_library("opus")
    if system:
        found.append(system)
    return found


def _bind(lib: ctypes.CDLL) -> None:
    p, i, c_int = ctypes.c_void_p, ctypes.c_int, ctypes.c_int
    i32p = ctypes.POINTER(ctypes.c_int)
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, c_int, c_int, i32p]
    lib.opus_encoder_create.restype = p
    lib.opus_encoder_destroy.argtypes = [p]
    lib.opus_encoder_destroy.restype = None
    lib.opus_encode_float.argtypes = [p, p, c_int, p, ctypes.c_int32]
    lib.opus_encode_float.restype = ctypes.c_int32
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, c_int, i32p]
    lib.opus_decoder_create.restype = p
    lib.opus_decoder_destroy.argtypes = [p]
    lib.opus_decoder_destroy.restype = None
    # data is c_void_p so that a ``bytes`` payload is passed by address, without a copy.
    lib.opus_decode_float.argtypes = [p, p, ctypes.c_int32, p, c_int, c_int]
    lib.opus_decode_float.restype = c_int
    lib.opus_packet_get_nb_samples.argtypes = [p, ctypes.c_int32, ctypes.c_int32]
    lib.opus_packet_get_nb_samples.restype = c_int
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_get_version_string.argtypes = []
    lib.opus_get_version_string.restype = ctypes.c_char_p
    # The ctl functions are variadic: argtypes stay unset and every argument is passed as an
    # explicit ctypes object (c_int or a pointer), which is exactly what the C ABI expects.
    lib.opus_encoder_ctl.restype = i
    lib.opus_decoder_ctl.restype = i


def load_libopus(*, hold_gil: bool = False) -> ctypes.CDLL:
    """The process-wide libopus handle (loaded once). Raises :class:`OpusUnavailable`.

    ``hold_gil``: the same library through :class:`ctypes.PyDLL`, whose calls keep the GIL.
    """
    global _lib, _lib_gil, _lib_path
    with _lib_lock:
        if _lib is not None:
            if hold_gil and _lib_gil is None:
                _lib_gil = ctypes.PyDLL(_lib_path)
                _bind(_lib_gil)
            return _lib_gil if hold_gil and _lib_gil is not None else _lib
        errors: list[str] = []
        for path in _candidates():
            try:
                lib = ctypes.CDLL(path)
                _bind(lib)
            except (OSError, AttributeError) as exc:
                errors.append(f"{path}: {exc}")
                continue
            _lib = lib
            _lib_path = path
            if hold_gil:
                _lib_gil = ctypes.PyDLL(path)
                _bind(_lib_gil)
                return _lib_gil
            return lib
        detail = "; ".join(errors) if errors else "none found"
        raise OpusUnavailable(
            "libopus not found: install PyAV (its wheel bundles libopus) or the system package "
            f"providing libopus.so ({detail})"
        )


def libopus_version() -> str:
    raw: bytes = load_libopus().opus_get_version_string()
    return raw.decode()


def _strerror(code: int) -> str:
    if _lib is None:
        return "unknown error"
    raw: bytes | None = _lib.opus_strerror(code)
    return raw.decode() if raw else "unknown error"


def packet_samples(packet: bytes) -> int:
    """Samples per channel in one Opus packet at 48 kHz; :class:`OpusError` if its TOC is invalid.

    Reads only the packet's table of contents, so a receiver can refuse a packet of the wrong
    duration (or garbage) before it is queued, on the connection that sent it.
    """
    n = len(packet)
    if n == 0:
        raise OpusError(-4, "empty packet")
    samples: int = load_libopus().opus_packet_get_nb_samples(packet, n, SAMPLE_RATE)
    if samples < 0:
        raise OpusError(samples, "opus_packet_get_nb_samples")
    return samples


def _check_shape(channels: int, frames: int) -> None:
    if channels not in (1, 2):
        raise ValueError(f"channels must be 1 or 2, got {channels}")
    if frames not in ALLOWED_FRAMES:
        raise ValueError(f"frames must be 120, 240 or 480 samples, got {frames}")


class OpusEncoder:
    """One CELT-only (restricted low-delay), CBR Opus encoder for fixed-size frames.

    :meth:`encode` takes a planar ``(channels, frames)`` float32 block (a listener's two rows
    of the personal-mix matrix) or an interleaved ``(frames, channels)`` one; :meth:`encode_into`
    writes the packet into a caller's buffer (the tick reserves the frame header in front of
    it, so header and payload end up in one ``bytes`` with one copy).
    """

    def __init__(
        self,
        channels: int = 2,
        frames: int = 120,
        *,
        bitrate: int = 128_000,
        complexity: int = 5,
        packet_loss_perc: int = 0,
        hold_gil: bool = False,
    ) -> None:
        _check_shape(channels, frames)
        if not 6_000 <= bitrate <= 510_000:
            raise ValueError(f"bitrate must be within 6000…510000 bit/s, got {bitrate}")
        if not 0 <= complexity <= 10:
            raise ValueError(f"complexity must be within 0…10, got {complexity}")
        lib = load_libopus()
        self._lib = lib
        self._encode_float = load_libopus(hold_gil=hold_gil).opus_encode_float
        self.channels = channels
        self.frames = frames
        self.bitrate = bitrate
        err = ctypes.c_int(0)
        handle = lib.opus_encoder_create(
            SAMPLE_RATE, channels, _APPLICATION_RESTRICTED_LOWDELAY, ctypes.byref(err)
        )
        if err.value != _OK or not handle:
            raise OpusError(err.value, "opus_encoder_create")
        self._st: int | None = handle
        self._ctl(_SET_BITRATE, bitrate)
        self._ctl(_SET_VBR, 0)
        self._ctl(_SET_COMPLEXITY, complexity)
        self._ctl(_SET_SIGNAL, _SIGNAL_MUSIC)
        self._ctl(_SET_PACKET_LOSS_PERC, packet_loss_perc)
        lookahead = ctypes.c_int(0)
        self._ctl_ptr(_GET_LOOKAHEAD, lookahead)
        self.lookahead = lookahead.value
        self._pcm = np.zeros(frames * channels, dtype=np.float32)
        self._pcm_2d = self._pcm.reshape(frames, channels)
        self._pcm_ptr = self._pcm.ctypes.data
        self._out = (ctypes.c_ubyte * MAX_PACKET)()
        self._out_ptr = ctypes.addressof(self._out)

    def _ctl(self, request: int, value: int) -> None:
        rc = self._lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(request), ctypes.c_int(value))
        if rc != _OK:
            raise OpusError(rc, f"opus_encoder_ctl({request}, {value})")

    def _ctl_ptr(self, request: int, value: ctypes.c_int) -> None:
        rc = self._lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(request), ctypes.byref(value))
        if rc != _OK:
            raise OpusError(rc, f"opus_encoder_ctl({request})")

    def reset(self) -> None:
        rc = self._lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(_RESET_STATE))
        if rc != _OK:
            raise OpusError(rc, "opus_encoder_ctl(OPUS_RESET_STATE)")

    def _stage(self, block: NDArray[np.float32]) -> None:
        if self._st is None:
            raise RuntimeError("encoder is closed")
        c, f = self.channels, self.frames
        if block.shape == (c, f):
            self._pcm_2d[...] = block.T
        elif block.shape == (f, c) or (c == 1 and block.shape == (f,)):
            self._pcm_2d.reshape(block.shape)[...] = block
        else:
            raise ValueError(
                f"block must be shaped ({c}, {f}) planar or ({f}, {c}) interleaved, got {block.shape}"
            )

    def encode_into(
        self, block: NDArray[np.float32], buffer: ctypes.Array[ctypes.c_ubyte], offset: int = 0
    ) -> int:
        """Encode ``block`` into ``buffer[offset:]`` (at least 1275 bytes free); returns the length."""
        self._stage(block)
        room = len(buffer) - offset
        if room < 1:
            raise ValueError("no room left in the output buffer")
        n: int = self._encode_float(
            self._st, self._pcm_ptr, self.frames, ctypes.addressof(buffer) + offset, min(room, MAX_PACKET)
        )
        if n < 0:
            raise OpusError(n, "opus_encode_float")
        return int(n)

    def encode(self, block: NDArray[np.float32]) -> bytes:
        """One packet for ``block``: planar ``(channels, frames)`` or interleaved ``(frames, channels)``."""
        self._stage(block)
        n: int = self._encode_float(self._st, self._pcm_ptr, self.frames, self._out_ptr, MAX_PACKET)
        if n < 0:
            raise OpusError(n, "opus_encode_float")
        return ctypes.string_at(self._out_ptr, n)

    def close(self) -> None:
        if self._st is not None:
            self._lib.opus_encoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        if getattr(self, "_st", None) is not None:
            self.close()


class OpusDecoder:
    """One Opus decoder producing fixed-size float32 blocks, with real Opus loss concealment.

    :meth:`decode` and :meth:`conceal` return the internal ``(channels, frames)`` planar view:
    valid until the next call on this decoder, copy it to keep it. A packet that does not hold
    exactly ``frames`` samples, or that libopus rejects, raises :class:`OpusError` and leaves the
    decoder usable.
    """

    def __init__(self, channels: int = 2, frames: int = 120, *, hold_gil: bool = False) -> None:
        _check_shape(channels, frames)
        lib = load_libopus()
        self._lib = lib
        self._decode_float = load_libopus(hold_gil=hold_gil).opus_decode_float
        self.channels = channels
        self.frames = frames
        err = ctypes.c_int(0)
        handle = lib.opus_decoder_create(SAMPLE_RATE, channels, ctypes.byref(err))
        if err.value != _OK or not handle:
            raise OpusError(err.value, "opus_decoder_create")
        self._st: int | None = handle
        self._pcm = np.zeros(frames * channels, dtype=np.float32)
        self._pcm_ptr = self._pcm.ctypes.data
        # Planar view of the interleaved buffer: (channels, frames) with stride `channels`.
        self._planar = self._pcm.reshape(frames, channels).T
        self._left = self._planar[0]
        self._right = self._planar[-1]
        self._copy = bytearray(MAX_PACKET)
        self._copy_view = memoryview(self._copy)
        self._copy_ptr = ctypes.addressof((ctypes.c_ubyte * MAX_PACKET).from_buffer(self._copy))

    def _address(self, packet: bytes | bytearray | memoryview) -> tuple[int | bytes, int]:
        n = len(packet)
        if n == 0:
            raise OpusError(-4, "empty packet")
        if n > MAX_PACKET:
            raise OpusError(-4, f"packet of {n} bytes (max {MAX_PACKET})")
        if isinstance(packet, bytes):
            return packet, n  # passed by address through the c_void_p argtype
        self._copy_view[:n] = packet  # a memoryview slice of a frame: one small copy, no objects kept
        return self._copy_ptr, n

    def decode(self, packet: bytes | bytearray | memoryview) -> NDArray[np.float32]:
        """The ``(channels, frames)`` block in ``packet``; see the class notes on lifetime."""
        if self._st is None:
            raise RuntimeError("decoder is closed")
        data, n = self._address(packet)
        samples = self._lib.opus_packet_get_nb_samples(data, n, SAMPLE_RATE)
        if samples < 0:
            raise OpusError(samples, "opus_packet_get_nb_samples")
        if samples != self.frames:
            raise OpusError(-4, f"packet holds {samples} samples, expected {self.frames}")
        got = self._decode_float(self._st, data, n, self._pcm_ptr, self.frames, 0)
        if got < 0:
            raise OpusError(got, "opus_decode_float")
        return self._planar

    def decode_mono(self, packet: bytes, row: NDArray[np.float32], row_address: int) -> None:
        """Decode ``packet`` as mono into ``row`` (``frames`` float32 at ``row_address``).

        The tick's fast path. A mono decoder (``channels=1``) writes straight into the row of
        the input matrix, whatever the stream: libopus downmixes a stereo stream itself, inside
        the decoder, at less cost than decoding both channels (the engine's choice). A stereo
        decoder decodes here and folds to (L + R) / 2 in place, with no temporaries.
        ``row_address`` is ``row``'s data pointer, computed once by the caller.
        """
        if self._st is None:
            raise RuntimeError("decoder is closed")
        n = len(packet)
        if self.channels == 1:
            got = self._decode_float(self._st, packet, n, row_address, self.frames, 0)
        else:
            got = self._decode_float(self._st, packet, n, self._pcm_ptr, self.frames, 0)
        if got < 0:
            raise OpusError(got, "opus_decode_float")
        if got != self.frames:
            raise OpusError(-4, f"packet held {got} samples, expected {self.frames}")
        if self.channels == 2:
            self._fold(row)

    def conceal_mono(self, row: NDArray[np.float32], row_address: int) -> None:
        """:meth:`conceal` into ``row`` as mono, like :meth:`decode_mono`."""
        if self._st is None:
            raise RuntimeError("decoder is closed")
        target = row_address if self.channels == 1 else self._pcm_ptr
        got = self._decode_float(self._st, None, 0, target, self.frames, 0)
        if got < 0:
            raise OpusError(got, "opus_decode_float (concealment)")
        if self.channels == 2:
            self._fold(row)

    def _fold(self, row: NDArray[np.float32]) -> None:
        np.add(self._left, self._right, out=row)
        np.multiply(row, np.float32(0.5), out=row)

    def conceal(self) -> NDArray[np.float32]:
        """Opus packet loss concealment for one missing frame (``opus_decode_float`` with NULL data)."""
        if self._st is None:
            raise RuntimeError("decoder is closed")
        got = self._decode_float(self._st, None, 0, self._pcm_ptr, self.frames, 0)
        if got < 0:
            raise OpusError(got, "opus_decode_float (concealment)")
        return self._planar

    def reset(self) -> None:
        rc = self._lib.opus_decoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(_RESET_STATE))
        if rc != _OK:
            raise OpusError(rc, "opus_decoder_ctl(OPUS_RESET_STATE)")

    def close(self) -> None:
        if self._st is not None:
            self._lib.opus_decoder_destroy(self._st)
            self._st = None

    def __del__(self) -> None:
        if getattr(self, "_st", None) is not None:
            self.close()


_PCM16_SCALE: Final = np.float32(1.0 / 32768.0)


def pcm16_to_float(
    payload: bytes | bytearray | memoryview, channels: int, frames: int, out: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Little-endian interleaved int16 into ``out`` shaped ``(channels, frames)`` (planar), scaled to ±1."""
    expected = channels * frames * 2
    if len(payload) != expected:
        raise ValueError(f"PCM16 payload is {len(payload)} bytes, expected {expected}")
    if out.shape != (channels, frames):
        raise ValueError(f"out must be shaped ({channels}, {frames}), got {out.shape}")
    pcm = np.frombuffer(payload, dtype="<i2").reshape(frames, channels)
    np.multiply(pcm.T, _PCM16_SCALE, out=out)
    return out


def float_to_pcm16(block: NDArray[np.float32], out: bytearray | memoryview) -> int:
    """A planar ``(channels, frames)`` block as interleaved little-endian int16 in ``out``; returns its size.

    Values are clipped to ±1 first (the limiter keeps mixes under its ceiling; this is a guard).
    """
    channels, frames = block.shape
    n = channels * frames * 2
    if len(out) < n:
        raise ValueError(f"out has {len(out)} bytes, needs {n}")
    dst = np.frombuffer(out, dtype="<i2", count=channels * frames).reshape(frames, channels)
    np.multiply(np.clip(block, -1.0, 1.0).T, 32767.0, out=dst, casting="unsafe")
    return int(n)


def packet_samples_table(frames: int) -> bytes:
    """Byte ``t`` is 1 when an Opus packet whose TOC byte is ``t`` holds exactly ``frames`` samples.

    Only packets of one or two frames (TOC codes 0 to 2) are covered; their duration is a
    function of the TOC byte alone. A receiver checks the common packet with one index instead
    of a libopus call, and sends the rest (code 3, or a 0 here) to :func:`packet_samples`.
    """
    lib = load_libopus()
    table = bytearray(256)
    for toc in range(256):
        if toc & 3 != 3:
            table[toc] = lib.opus_packet_get_nb_samples(bytes((toc,)), 1, SAMPLE_RATE) == frames
    return bytes(table)
