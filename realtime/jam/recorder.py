"""Recording a jam: each sender's decoded input, one file per participant and take.

The engine's tap hands the recorder every tick's decoded block X (the rows the engine mixed:
after the jitter buffer and Opus PLC) as a copy; :meth:`TakeRecorder.push` only appends it to a
bounded deque. A writer thread drains the deque every 50 ms and writes 24-bit mono WAV files,
so the tick never waits for a disk or an encoder. A participant's file starts at its first
non-silent block and ends when the take stops or the participant leaves; each finished file is
reported with what :func:`place_clip` needs to put it on the timeline.

**Alignment** (docs/session-schema.md#recording-a-jam). A block the server decodes at time
``t`` was played by the musician ``L`` earlier, while they heard the timeline at ``pos(t - L)``:

    L = residence + RTT / 2 + client latency

- ``residence``: the median time the participant's blocks waited in the server between arrival
  and decoding (its jitter buffer), measured over the take. The median, not the mean: a buffer
  that jumps under a network stall for a moment should not move the whole take;
- ``RTT / 2``: the network's one-way delay (the WebRTC stats, or ``rttMs`` reported in ``ping``);
- ``client latency``: ``latencyMs`` from ``join``, the client's own output + input latency
  (audio device, capture block, encoder look-ahead).

So a file whose first sample was decoded at wall time ``t0`` starts on the timeline at
``pos(t0) - L``; a start before zero is cut off with the clip's ``offset``.

**Placement in the file.** Each block is written where its sequence number puts it in the
sender's stream (:attr:`~realtime.jam.jitter.JitterBuffer.played_seq`), not where the tick played
it: when the jitter buffer deepens mid-take it inserts a block that stands for no sender audio
(skipped), and when it trims it drops packets (their place stays silent), so a depth change does
not shift the rest of the take. ``t0`` is likewise anchored on arrivals: the median of
``arrival - position`` over the take, plus the median residence, is when sample 0 would have been
decoded by a buffer that never changed depth. A jump of the sequence numbers that the ticks do not
match (a sender's restart or resume after a pause) is a discontinuity: the file goes on where the
ticks say.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from ..media.encode import AudioEncoder
from ..session.schema import Transport

__all__ = [
    "ClipPlacement",
    "TakeFile",
    "TakeRecorder",
    "alignment_latency",
    "place_clip",
    "timeline_position",
]

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 48000
WAV_BYTES_PER_FRAME: Final = 3  # mono, 24-bit
_POLL_S: Final = 0.05
_WAIT_BIN_S: Final = 1e-4  # residence histogram: 0.1 ms bins up to 1 s (40 KB a participant)
_WAIT_BINS: Final = 10_000
# Arrival anchor histogram: 0.1 ms bins over +-1 s around the file's first decode (80 KB).
_ANCHOR_SPAN_S: Final = 1.0
_ANCHOR_BINS: Final = 20_000
# How far the sequence numbers may run ahead of or behind the ticks before it is a restart:
# more than any jitter buffer's depth change (its maximum depth is well under this).
_RESYNC_BLOCKS: Final = 80


def _median_bin(hist: NDArray[np.int32]) -> int | None:
    total = int(hist.sum())
    if not total:
        return None
    return int(np.searchsorted(np.cumsum(hist), (total + 1) // 2))


def _median_wait(hist: NDArray[np.int32]) -> float | None:
    index = _median_bin(hist)
    return None if index is None else (index + 0.5) * _WAIT_BIN_S


def _median_anchor(hist: NDArray[np.int32]) -> float | None:
    index = _median_bin(hist)
    return None if index is None else (index + 0.5) * _WAIT_BIN_S - _ANCHOR_SPAN_S


# --------------------------------------------------------------------------------------------
# Alignment (pure)
# --------------------------------------------------------------------------------------------


def timeline_position(transport: Transport, wall_s: float) -> float:
    """Seconds on the timeline that the shared transport plays at wall-clock time ``wall_s``.

    The same rule as the preview's playhead (``startedAt`` is server time in ms when play
    started at ``position``); loops are not followed: a take is placed on the straight timeline.
    """
    if not transport.playing or transport.started_at <= 0:
        return transport.position
    return transport.position + max(0.0, wall_s * 1000.0 - transport.started_at) / 1000.0


def alignment_latency(
    *, residence_s: float | None, rtt_ms: float | None, client_ms: float | None, fallback_s: float
) -> float:
    """``L`` of the module docstring, in seconds: how long after the musician played it the
    server decoded a block. ``fallback_s`` stands in for a residence that was never measured."""
    total = residence_s if residence_s is not None and math.isfinite(residence_s) else fallback_s
    if rtt_ms is not None and math.isfinite(rtt_ms) and rtt_ms > 0:
        total += rtt_ms / 2000.0
    if client_ms is not None and math.isfinite(client_ms) and client_ms > 0:
        total += client_ms / 1000.0
    return max(0.0, total)


@dataclass(frozen=True, slots=True)
class ClipPlacement:
    start: float
    offset: float
    length: float


def place_clip(timeline_s: float, latency_s: float, duration_s: float) -> ClipPlacement | None:
    """Where a recording whose first sample was decoded at timeline ``timeline_s`` goes.

    None when nothing of it lands at or after the timeline's start.
    """
    start = timeline_s - latency_s
    offset = 0.0
    if start < 0:
        offset, start = -start, 0.0
    length = duration_s - offset
    if length <= 0:
        return None
    return ClipPlacement(start=start, offset=offset, length=length)


# --------------------------------------------------------------------------------------------
# The recorder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TakeFile:
    """One participant's finished recording."""

    pid: str
    path: Path
    frames: int
    first_tick: int
    # The engine clock (monotonic seconds) at which sample 0 was decoded, as anchored on the
    # take's arrivals (module notes); the tick's own time when no arrival was measured.
    first_time: float
    residence_s: float | None  # median arrival → decode wait of its blocks; None if never measured
    padded_frames: int  # silence written for blocks the recorder lost (queue full)

    @property
    def duration_s(self) -> float:
        return self.frames / SAMPLE_RATE


class _File:
    __slots__ = (
        "anchors",
        "encoder",
        "first_tick",
        "first_time",
        "frames",
        "handle",
        "last_tick",
        "next_pos",
        "padded",
        "path",
        "shift",
        "waits",
    )

    def __init__(self, path: Path, first_tick: int, first_time: float, first_seq: int) -> None:
        self.path = path
        # Opened here, not by the encoder: a file that cannot be created fails cleanly.
        self.handle = path.open("xb")
        try:
            self.encoder = AudioEncoder(self.handle, "wav", 1)
        except BaseException:
            self.handle.close()
            raise
        self.first_tick = first_tick
        self.first_time = first_time
        self.shift = -first_seq  # a block's position in the file, in blocks: seq + shift
        self.next_pos = 0
        self.last_tick = first_tick
        self.frames = 0
        self.padded = 0
        self.waits = np.zeros(_WAIT_BINS, np.int32)  # histogram of arrival → decode waits
        self.anchors = np.zeros(_ANCHOR_BINS, np.int32)  # arrival - position, around first_time

    def anchored_time(self) -> float:
        """When sample 0 was decoded, as the take's arrivals and residence put it."""
        anchor = _median_anchor(self.anchors)
        wait = _median_wait(self.waits)
        if anchor is None or wait is None:
            return self.first_time
        return self.first_time + anchor + wait

    def write(self, samples: NDArray[np.float32]) -> None:
        self.encoder.write(samples.reshape(1, -1))
        self.frames += samples.size

    def close(self) -> None:
        try:
            self.encoder.close()
        finally:
            self.handle.close()

    def abandon(self, exc: BaseException) -> None:
        self.encoder.__exit__(type(exc), exc, None)
        self.handle.close()
        self.path.unlink(missing_ok=True)


_Item = tuple[int, tuple[str, ...], NDArray[np.float32], NDArray[np.float64], NDArray[np.int64], float]


class TakeRecorder:
    """One take of one jam: the tick pushes, a writer thread writes, the loop is told per file.

    ``on_file`` (a finished :class:`TakeFile`), ``on_stopped`` (after :meth:`stop`, once every
    file is reported) and ``on_error`` are called **on the writer thread**; callers hop to
    their loop themselves. ``temp_path(suffix)`` gives a fresh file path.
    """

    def __init__(
        self,
        *,
        block: int,
        temp_path: Callable[[str], Path],
        on_file: Callable[[TakeFile], None],
        on_stopped: Callable[[], None],
        on_error: Callable[[BaseException], None],
        max_queue_s: float = 4.0,
    ) -> None:
        self.block = block
        self._temp_path = temp_path
        self._on_file = on_file
        self._on_stopped = on_stopped
        self._on_error = on_error
        self._queue: collections.deque[_Item] = collections.deque()
        self._max_items = max(1, math.ceil(max_queue_s * SAMPLE_RATE / block))
        self._finish: collections.deque[str] = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jam-recorder", daemon=True)
        self._files: dict[str, _File] = {}
        self._done: set[str] = set()
        self._closed_frames = 0
        self._closed_longest = 0
        # Written by the writer thread, read by the loop (single assignments: no lock needed).
        self.dropped_blocks = 0
        self.seconds = 0.0
        self.bytes = 0
        self.participants = 0
        self.failed: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    # -- tick thread -------------------------------------------------------------------------
    def push(
        self,
        tick: int,
        inputs: tuple[str, ...],
        x: NDArray[np.float32],
        arrivals: NDArray[np.float64],
        seqs: NDArray[np.int64],
        now: float,
    ) -> None:
        """One tick's decoded inputs (``x`` rows in ``inputs`` order, owned by the recorder from
        now on), their arrival times (NaN: concealed) and places in their senders' streams (-1:
        inserted by the jitter buffer, no sender audio). Never blocks; a full queue drops the
        block (the writer pads the gap with silence, so later audio stays aligned)."""
        q = self._queue
        if len(q) >= self._max_items or self._stop.is_set():
            self.dropped_blocks += 1
            return
        q.append((tick, inputs, x, arrivals, seqs, now))

    # -- loop --------------------------------------------------------------------------------
    def finish(self, pid: str) -> None:
        """The participant left: finish its file after the blocks already queued."""
        self._finish.append(pid)

    def stop(self) -> None:
        """End the take: the writer writes what is queued, finishes every file, reports them."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                stopping = self._stop.is_set()  # read first: the drain below takes all it queued
                self._drain()
                while self._finish:
                    self._close(self._finish.popleft())
                if stopping:
                    for pid in list(self._files):
                        self._close(pid)
                    break
                self._stop.wait(_POLL_S)
        except BaseException as exc:
            self.failed = exc
            log.exception("jam recorder failed")
            for f in self._files.values():
                f.abandon(exc)
            self._files.clear()
            self._queue.clear()
            self._on_error(exc)
            return
        self._on_stopped()

    def _drain(self) -> None:
        q = self._queue
        items = [q.popleft() for _ in range(len(q))]
        start = 0
        # Runs of consecutive ticks with the same inputs are written as one array per participant.
        for i in range(1, len(items) + 1):
            if i == len(items) or items[i][1] is not items[start][1] or items[i][0] != items[i - 1][0] + 1:
                self._write_run(items[start:i])
                start = i
        if items:
            self._count()

    def _count(self) -> None:
        files = self._files.values()
        longest = max([self._closed_longest, *(f.frames for f in files)])
        self.seconds = longest / SAMPLE_RATE
        self.bytes = (self._closed_frames + sum(f.frames for f in files)) * WAV_BYTES_PER_FRAME

    def _write_run(self, run: list[_Item]) -> None:
        k0 = run[0][0]
        inputs = run[0][1]
        blocks = np.stack([item[2] for item in run])  # (T, N, B)
        arrivals = np.stack([item[3] for item in run])  # (T, N)
        seqs = np.stack([item[4] for item in run])  # (T, N)
        nows = np.array([item[5] for item in run])  # (T,)
        ticks = np.arange(k0, k0 + len(run), dtype=np.int64)
        for i, pid in enumerate(inputs):
            if pid in self._done:
                continue
            rows = blocks[:, i, :]
            seq = seqs[:, i]
            f = self._files.get(pid)
            first = 0
            if f is None:
                sounding = np.flatnonzero(rows.any(axis=1) & (seq >= 0))
                if not sounding.size:
                    continue  # nothing from this participant yet: its file starts with its audio
                first = int(sounding[0])
                f = self._files[pid] = _File(
                    self._temp_path(".wav"), k0 + first, float(nows[first]), int(seq[first])
                )
                self.participants += 1
            keep = np.flatnonzero(seq[first:] >= 0) + first  # inserted blocks hold no sender audio
            if keep.size:
                self._write_blocks(f, rows[keep], seq[keep], ticks[keep], nows[keep], arrivals[keep, i])

    def _write_blocks(
        self,
        f: _File,
        rows: NDArray[np.float32],
        seq: NDArray[np.int64],
        ticks: NDArray[np.int64],
        nows: NDArray[np.float64],
        arrivals: NDArray[np.float64],
    ) -> None:
        """Write blocks at their places in the sender's stream: gaps (lost, trimmed, dropped by
        the queue) become silence, and a sequence jump the ticks do not match re-bases the file
        on the ticks."""
        b = self.block
        pos = seq + f.shift
        # Normally the places advance like the ticks, give or take the buffer's depth changes.
        expected = f.next_pos - 1 + (ticks - f.last_tick)
        bad = (np.diff(pos, prepend=f.next_pos - 1) <= 0) | (np.abs(pos - expected) > _RESYNC_BLOCKS)
        if bad.any():
            pos = pos.copy()
            last_pos, last_tick = f.next_pos - 1, f.last_tick
            for t in range(len(pos)):
                p = int(seq[t]) + f.shift
                if p <= last_pos or abs(p - (last_pos + int(ticks[t]) - last_tick)) > _RESYNC_BLOCKS:
                    p = last_pos + max(1, int(ticks[t]) - last_tick)
                    f.shift = p - int(seq[t])
                pos[t] = p
                last_pos, last_tick = p, int(ticks[t])
        span = int(pos[-1]) - f.next_pos + 1
        out = np.zeros((span, b), np.float32)
        out[pos - f.next_pos] = rows
        gap = span - len(pos)
        if gap:
            f.padded += gap * b
        f.write(out.reshape(-1))
        f.next_pos = int(pos[-1]) + 1
        f.last_tick = int(ticks[-1])
        measured = ~np.isnan(arrivals)
        if measured.any():
            waits = nows[measured] - arrivals[measured]
            bins = np.clip((waits / _WAIT_BIN_S).astype(np.int64), 0, _WAIT_BINS - 1)
            f.waits += np.bincount(bins, minlength=_WAIT_BINS).astype(np.int32)
            anchor = arrivals[measured] - f.first_time - pos[measured] * (b / SAMPLE_RATE) + _ANCHOR_SPAN_S
            bins = np.clip((anchor / _WAIT_BIN_S).astype(np.int64), 0, _ANCHOR_BINS - 1)
            f.anchors += np.bincount(bins, minlength=_ANCHOR_BINS).astype(np.int32)

    def _close(self, pid: str) -> None:
        self._done.add(pid)
        f = self._files.pop(pid, None)
        if f is None:
            return  # left without ever sounding: no file
        f.close()
        self._closed_frames += f.frames
        self._closed_longest = max(self._closed_longest, f.frames)
        self._count()
        self._on_file(
            TakeFile(
                pid=pid,
                path=f.path,
                frames=f.frames,
                first_tick=f.first_tick,
                first_time=f.anchored_time(),
                residence_s=_median_wait(f.waits),
                padded_frames=f.padded,
            )
        )
