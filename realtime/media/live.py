"""A continuous Ogg/Opus encoder: float32 blocks in, complete Ogg pages out (PyAV/libopus)."""

from __future__ import annotations

import io

import av
import numpy as np
from numpy.typing import NDArray

from .ogg import Page, PageSplitter

SAMPLE_RATE = 48000
OPUS_FRAME = 960  # 20 ms: the packet size every browser and ffmpeg handle


class OggOpusEncoder:
    """Encodes one endless stereo stream; `encode` returns the pages completed so far.

    Pages close every `page_ms` so listeners get audio promptly; the first two pages are the
    OpusHead and OpusTags headers (granule 0), which late joiners are sent first.
    """

    def __init__(self, *, bitrate: int = 128_000, page_ms: int = 100) -> None:
        self._buf = io.BytesIO()
        self._container = av.open(
            self._buf, "w", format="ogg", options={"page_duration": str(page_ms * 1000)}
        )
        # Constant bitrate: silence (a stopped transport) still sends a steady byte stream, so
        # players fill their start-up buffer and keep the element playing.
        stream = self._container.add_stream("libopus", rate=SAMPLE_RATE, options={"vbr": "off"})
        stream.layout = "stereo"
        stream.bit_rate = bitrate
        self._stream = stream
        self._splitter = PageSplitter()
        self._pending = np.zeros((2, 0), dtype=np.float32)
        self._pts = 0
        self.closed = False

    def encode(self, block: NDArray[np.float32]) -> list[Page]:
        """Add stereo samples (any count); returns the pages that are complete now."""
        if block.ndim != 2 or block.shape[0] != 2:
            raise ValueError(f"expected a (2, n) block, got {block.shape}")
        pending = np.concatenate([self._pending, block.astype(np.float32, copy=False)], axis=1)
        whole = pending.shape[1] - pending.shape[1] % OPUS_FRAME
        for i in range(0, whole, OPUS_FRAME):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(pending[:, i : i + OPUS_FRAME]), format="fltp", layout="stereo"
            )
            frame.sample_rate = SAMPLE_RATE
            frame.pts = self._pts
            self._pts += OPUS_FRAME
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        self._pending = pending[:, whole:]
        return self._drain()

    def _drain(self) -> list[Page]:
        data = self._buf.getvalue()
        if not data:
            return []
        self._buf.seek(0)
        self._buf.truncate(0)
        return self._splitter.feed(data)

    def close(self) -> list[Page]:
        if self.closed:
            return []
        self.closed = True
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._drain()
