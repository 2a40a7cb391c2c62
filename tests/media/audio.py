"""Test audio made on the spot: sines written with the stdlib `wave` module or with PyAV."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

# (file suffix, PyAV container, encoder, sample format) for each compressed upload format.
PYAV_FORMATS = {
    "flac": (".flac", "flac", "flac", "s16"),
    "mp3": (".mp3", "mp3", "libmp3lame", "fltp"),
    "opus": (".opus", "ogg", "libopus", "flt"),
    "m4a": (".m4a", "ipod", "aac", "fltp"),
    "ogg-vorbis": (".ogg", "ogg", "libvorbis", "fltp"),
}


def sine(
    freq: float = 1000.0,
    *,
    seconds: float = 1.0,
    rate: int = 48000,
    amplitude: float = 0.5,
    channels: int = 1,
) -> F32:
    t = np.arange(round(seconds * rate)) / rate
    tone = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    # Later channels quieter, so a swapped or merged channel shows.
    return np.stack([tone * (0.5**c) for c in range(channels)]).astype(np.float32)


def wav_bytes(samples: F32, rate: int = 48000, sampwidth: int = 2) -> bytes:
    """16-bit (or 24/32-bit) PCM WAV through the stdlib."""
    full = float(2 ** (8 * sampwidth - 1))
    ints = np.clip(np.rint(samples * full), -full, full - 1).astype("<i4").T
    raw = np.ascontiguousarray(ints).view(np.uint8).reshape(-1, 4)[:, :sampwidth].tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(samples.shape[0])
        w.setsampwidth(sampwidth)
        w.setframerate(rate)
        w.writeframes(raw)
    return buffer.getvalue()


def encoder_exists(codec: str) -> bool:
    try:
        av.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def pyav_bytes(samples: F32, kind: str, rate: int = 48000) -> bytes:
    """`samples` encoded with PyAV as `kind` (a key of PYAV_FORMATS)."""
    _, container_format, codec, sample_format = PYAV_FORMATS[kind]
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)
        stream.codec_context.format = av.AudioFormat(sample_format)
        if sample_format == "s16":
            data: npt.NDArray[np.generic] = np.ascontiguousarray(
                np.clip(np.rint(samples.T * 32767), -32768, 32767).astype(np.int16)
            ).reshape(1, -1)
        elif sample_format == "flt":
            data = np.ascontiguousarray(samples.T).reshape(1, -1)
        else:
            data = np.ascontiguousarray(samples)
        frame = av.AudioFrame.from_ndarray(data, format=sample_format, layout=layout)  # type: ignore[arg-type]
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def dominant_frequency(samples: F32, rate: int = 48000) -> float:
    """The frequency of the largest FFT bin of the first channel (Hann window)."""
    x = samples[0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))
