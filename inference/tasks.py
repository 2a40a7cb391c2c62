"""Per-kind execution inside a worker: separate, transcribe and master, from files to files.

A task's input is a `.npy` file of float32 `(channels, frames)` audio at 48 kHz (the asset's
samples, written by the executor); its outputs go into the task's `out_dir`:

- separation: one 24-bit WAV per stem (`<stem>.wav`), 48 kHz, exactly as many frames as the
  input, so a stem lines up sample for sample with its source. demucs models run at their own
  rate (44.1 kHz): the mix is resampled on the way in, and every block the separator finishes
  is resampled back and written at once (soxr's streaming resampler), so nothing grows with
  the track's length;
- transcription: `transcription.mid` (a standard MIDI file) and `notes.json`;
- mastering: `mastered.wav` and the chain's report in the result.

The result dicts hold only JSON values (paths, numbers, names): they travel over a pipe and
into the job record.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import soxr

from realtime.media.decode import SAMPLE_RATE
from realtime.media.encode import AudioEncoder

from .worker import Task, WorkerConfig

log = logging.getLogger(__name__)

Audio = npt.NDArray[np.float32]
ProgressFn = Callable[[float], None]
CancelledFn = Callable[[], bool]

DEFAULT_ONSET_THRESHOLD = 0.5
DEFAULT_FRAME_THRESHOLD = 0.3


class TaskError(Exception):
    """A task failed for a reason its user can act on; the message is shown as is."""


class TaskCancelled(Exception):
    """The job was cancelled while it ran."""


def load_audio(path: str | Path) -> Audio:
    """A task's input: float32 (channels, frames) at 48 kHz."""
    audio = np.load(path, mmap_mode="r", allow_pickle=False)
    if audio.ndim != 2 or audio.dtype != np.float32 or audio.shape[0] not in (1, 2):
        raise TaskError(f"task input {Path(path).name} is not float32 (channels, frames) audio")
    return np.asarray(audio)


def save_audio(path: str | Path, audio: npt.ArrayLike) -> None:
    """Write a task input (the inverse of `load_audio`)."""
    np.save(path, np.ascontiguousarray(audio, dtype=np.float32), allow_pickle=False)


def resolve_device(wanted: str) -> tuple[str, str]:
    """The device this worker will use and, if it differs from `wanted`, why."""
    import torch

    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            return "cpu", f"{wanted} requested but torch sees no usable CUDA device; running on the CPU"
        index = int(wanted.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return "cpu", f"{wanted} requested but only {torch.cuda.device_count()} CUDA device(s); using CPU"
        return f"cuda:{index}", ""
    return "cpu", ""


class TaskRunner:
    """A worker's models and how each kind of task runs on them (one per worker process)."""

    def __init__(self, config: WorkerConfig) -> None:
        import torch

        torch.set_num_threads(config.threads)
        # Raises once parallel work has run; a fresh worker has run none.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(1)
        self.config = config
        self.threads = int(torch.get_num_threads())
        self.device, self.device_note = resolve_device(config.device)
        self._models: dict[str, Any] = {}
        self._separators: dict[str, Any] = {}
        self._transcriber: Any = None

    def close(self) -> None:
        self._separators.clear()
        self._models.clear()

    # separation --------------------------------------------------------------------------------
    def _separator(self, name: str) -> Any:
        separator = self._separators.get(name)
        if separator is not None:
            return separator
        from .models import ModelError, load_separation_model
        from .separation import BatchedSeparator

        model = self._models.get(name)
        if model is None:
            try:
                model = load_separation_model(name, Path(self.config.models_dir), self.device)
            except ModelError as exc:
                raise TaskError(str(exc)) from exc
            self._models[name] = model  # resident for the life of the worker
        dtype: Literal["fp32", "tf32", "bf16"]
        if self.config.precision == "bf16":
            dtype = "bf16"
        else:  # fp32 storage; TF32 tensor cores on a GPU, as PyTorch's own default for convolutions
            dtype = "tf32" if self.device.startswith("cuda") else "fp32"
        separator = BatchedSeparator(model, device=self.device, max_batch=self.config.max_batch, dtype=dtype)
        self._separators[name] = separator
        return separator

    def start_separation(
        self,
        task: Task,
        *,
        on_progress: ProgressFn,
        on_done: Callable[[dict[str, Any]], None],
        on_failed: Callable[[BaseException], None],
    ) -> SeparationRun:
        separator = self._separator(str(task.params.get("model", "htdemucs")))
        return SeparationRun(task, separator, on_progress=on_progress, on_done=on_done, on_failed=on_failed)

    @property
    def separating(self) -> bool:
        """A separator still holds a job (a cancelled one included, until its next step)."""
        return any(not separator.idle for separator in self._separators.values())

    def step_separations(self) -> None:
        for separator in list(self._separators.values()):
            if not separator.idle:
                separator.step()

    def reset_separators(self) -> None:
        """Drop the separators (their jobs are gone); the models stay loaded."""
        self._separators.clear()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # transcription and mastering ------------------------------------------------------------
    def run_solo(self, task: Task, *, progress: ProgressFn, cancelled: CancelledFn) -> dict[str, Any]:
        if task.kind == "transcribe":
            return self._transcribe(task, progress, cancelled)
        if task.kind == "master":
            return run_mastering(task, progress=progress, cancelled=cancelled)
        raise TaskError(f"unknown task kind {task.kind!r}")

    def _transcribe(self, task: Task, progress: ProgressFn, cancelled: CancelledFn) -> dict[str, Any]:
        if self._transcriber is None:
            from .transcribe import Transcriber

            try:
                self._transcriber = Transcriber(threads=self.config.threads)
            except (RuntimeError, FileNotFoundError) as exc:
                raise TaskError(f"transcription is unavailable on this worker: {exc}") from exc
        return run_transcription(task, self._transcriber, progress=progress, cancelled=cancelled)


class StemWriter:
    """One stem's WAV file, fed blocks at the model's rate in order, written at 48 kHz.

    The file ends up with exactly `frames` frames: the resampler's rounding at the end is
    trimmed or padded with silence.
    """

    def __init__(self, path: Path, channels: int, rate: int, frames: int) -> None:
        self.path = path
        self.frames = frames
        self.written = 0
        self._resampler = (
            soxr.ResampleStream(rate, SAMPLE_RATE, channels, dtype="float32")
            if (rate != SAMPLE_RATE)
            else None
        )
        self._encoder = AudioEncoder(path, "wav", channels)

    def write(self, block: Audio, *, last: bool = False) -> None:
        if self._resampler is not None:
            block = self._resampler.resample_chunk(np.ascontiguousarray(block.T), last=last).T
        room = self.frames - self.written
        block = block[:, :room]
        self._encoder.write(block)
        self.written += block.shape[1]

    def finish(self) -> None:
        if self._resampler is not None:
            self.write(np.zeros((self._encoder.channels, 0), dtype=np.float32), last=True)
        if self.written < self.frames:
            self._encoder.write(np.zeros((self._encoder.channels, self.frames - self.written), np.float32))
            self.written = self.frames
        self._encoder.close()

    def abandon(self) -> None:
        self._encoder._abandon()
        self.path.unlink(missing_ok=True)


class SeparationRun:
    """One separation job in a worker's `BatchedSeparator`: resampled mix in, stem files out."""

    def __init__(
        self,
        task: Task,
        separator: Any,
        *,
        on_progress: ProgressFn,
        on_done: Callable[[dict[str, Any]], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        from .separation import Priority

        self.task = task
        self.separator = separator
        self._on_done = on_done
        self._on_failed = on_failed
        self.writers: dict[str, StemWriter] = {}
        audio = load_audio(task.inputs["audio"])
        self.frames = int(audio.shape[1])
        channels = int(separator.audio_channels)
        mix = to_channels(audio, channels)
        rate = int(separator.samplerate)
        if rate != SAMPLE_RATE:
            mix = np.ascontiguousarray(soxr.resample(mix.T, SAMPLE_RATE, rate).T)
        requested = task.params.get("stems") or list(separator.sources)
        unknown = [s for s in requested if s not in separator.sources]
        if unknown:
            offered = ", ".join(separator.sources)
            raise TaskError(f"the model has no stem {', '.join(map(repr, unknown))}; it has {offered}")
        self.stems = [str(s) for s in requested]
        out_dir = Path(task.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.writers = {s: StemWriter(out_dir / f"{s}.wav", channels, rate, self.frames) for s in self.stems}
        try:
            separator.add(
                task.job_id,
                mix,
                stems=self.stems,
                sink=self._sink,
                on_progress=lambda _job, fraction: on_progress(fraction),
                on_done=self._done,
                priority=Priority.INTERACTIVE if task.interactive else Priority.BULK,
            )
        except ValueError as exc:
            self._abandon()
            raise TaskError(f"cannot separate this audio: {exc}") from exc

    def _sink(self, _job_id: str, _start: int, block: Audio) -> None:
        for i, stem in enumerate(self.stems):
            self.writers[stem].write(block[i])

    def _done(self, _job_id: str, outcome: str, error: BaseException | None) -> None:
        if outcome != "done":
            self._abandon()
            if outcome == "failed":
                self._on_failed(error or RuntimeError("separation failed"))
            return
        try:
            for writer in self.writers.values():
                writer.finish()
        except Exception as exc:  # disk full, say: this job fails, the others go on
            self._abandon()
            self._on_failed(exc)
            return
        self._on_done(
            {
                "model": str(self.task.params.get("model", "htdemucs")),
                "frames": self.frames,
                "stems": {stem: str(w.path) for stem, w in self.writers.items()},
            }
        )

    def cancel(self) -> None:
        self.separator.cancel(self.task.job_id)
        self._abandon()

    def _abandon(self) -> None:
        for writer in self.writers.values():
            writer.abandon()


def to_channels(audio: Audio, channels: int) -> Audio:
    """`audio` with `channels` channels: mono is copied to both sides, stereo is averaged to mono."""
    if audio.shape[0] == channels:
        return np.ascontiguousarray(audio, dtype=np.float32)
    if channels == 1:
        return np.ascontiguousarray(audio.mean(axis=0, keepdims=True), dtype=np.float32)
    return np.ascontiguousarray(np.repeat(audio[:1], channels, axis=0), dtype=np.float32)


def run_transcription(
    task: Task, transcriber: Any, *, progress: ProgressFn, cancelled: CancelledFn
) -> dict[str, Any]:
    from .midi import notes_to_midi

    params = task.params
    audio = load_audio(task.inputs["audio"])
    try:
        notes = transcriber.transcribe(
            audio,
            SAMPLE_RATE,
            onset_threshold=float(params.get("onset_threshold", DEFAULT_ONSET_THRESHOLD)),
            frame_threshold=float(params.get("frame_threshold", DEFAULT_FRAME_THRESHOLD)),
            progress=progress,
            cancelled=cancelled,
        )
    except concurrent.futures.CancelledError as exc:
        raise TaskCancelled from exc
    except (TypeError, ValueError) as exc:
        raise TaskError(f"cannot transcribe this audio: {exc}") from exc
    out_dir = Path(task.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    midi_path = out_dir / "transcription.mid"
    midi_path.write_bytes(notes_to_midi(notes, bpm=float(params.get("bpm", 120.0))))
    notes_path = out_dir / "notes.json"
    notes_path.write_text(json.dumps([note_json(n) for n in notes], separators=(",", ":")))
    return {
        "midi": str(midi_path),
        "notes": str(notes_path),
        "count": len(notes),
        "duration": audio.shape[1] / SAMPLE_RATE,
    }


def note_json(note: Any) -> dict[str, Any]:
    return {
        "pitch": int(note.pitch),
        "start": round(float(note.start), 6),
        "duration": round(float(note.duration), 6),
        "velocity": int(note.velocity),
    }


def run_mastering(task: Task, *, progress: ProgressFn, cancelled: CancelledFn) -> dict[str, Any]:
    from .mastering import master

    params = task.params
    audio = load_audio(task.inputs["audio"])
    reference = load_audio(task.inputs["reference"]) if "reference" in task.inputs else None
    try:
        mastered = master(
            np.ascontiguousarray(audio),
            SAMPLE_RATE,
            target_lufs=float(params.get("target_lufs", -14.0)),
            true_peak_db=float(params.get("true_peak_db", -1.0)),
            reference=None if reference is None else np.ascontiguousarray(reference),
            progress=progress,
            cancelled=cancelled,
        )
    except concurrent.futures.CancelledError as exc:
        raise TaskCancelled from exc
    except (TypeError, ValueError) as exc:
        raise TaskError(f"cannot master this audio: {exc}") from exc
    if cancelled():
        raise TaskCancelled
    out = np.asarray(mastered.audio, dtype=np.float32)
    out_dir = Path(task.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "mastered.wav"
    with AudioEncoder(path, "wav", out.shape[0]) as encoder:
        encoder.write(out)
    return {"audio": str(path), "frames": int(out.shape[1]), "report": jsonable(mastered.report)}


def jsonable(value: Any) -> Any:
    """A report (dataclass, mapping, numpy scalars) as plain JSON values; NaN/inf become None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
