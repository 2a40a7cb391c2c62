"""Audio → notes with basic-pitch's ICASSP-2022 model, run directly on onnxruntime.

basic-pitch's own ``predict()`` reads a file and runs its 2-second windows through the model
one at a time. Here the audio arrives as an array (any rate, mono or channels x frames), is
folded to mono and resampled to 22 050 Hz exactly as ``librosa.load`` does it, cut into the
same windows (43 844 samples, 30 frames = 7 680 samples of overlap, 3 840 zeros in front), and
the windows go through one ``InferenceSession`` in a few bounded batches (the model's batch
dimension is free). The outputs are trimmed and stitched as basic-pitch's ``unwrap_output``
does and decoded by basic-pitch's own ``note_creation.model_output_to_notes``, so the notes are
those ``predict()`` finds on the same audio.

A :class:`Transcriber` owns its session: create one per worker process and keep it.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import logging
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .midi import Note

__all__ = [
    "MODEL_SAMPLE_RATE",
    "Note",
    "Transcriber",
    "default_model_path",
    "model_windows",
]

# basic_pitch.constants, restated so that windowing needs no import of basic-pitch.
MODEL_SAMPLE_RATE = 22050
FFT_HOP = 256
WINDOW_SAMPLES = MODEL_SAMPLE_RATE * 2 - FFT_HOP  # AUDIO_N_SAMPLES = 43 844
FRAMES_PER_SECOND = MODEL_SAMPLE_RATE // FFT_HOP  # ANNOTATIONS_FPS = 86
OVERLAP_FRAMES = 30
OVERLAP_SAMPLES = OVERLAP_FRAMES * FFT_HOP
HOP_SAMPLES = WINDOW_SAMPLES - OVERLAP_SAMPLES

_INPUT = "serving_default_input_2:0"
# Output order of basic_pitch.inference.Model.predict for ONNX: note, onset, contour.
_OUTPUTS = ("StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0")
_KEYS = ("note", "onset", "contour")

Progress = Callable[[float], None]
Cancelled = Callable[[], bool]


class _QuietBasicPitchImport(logging.Filter):
    """Drops the warnings ``basic_pitch/__init__`` logs on the root logger about missing runtimes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not Path(record.pathname).match("*/basic_pitch/__init__.py")


def _basic_pitch_note_creation() -> ModuleType:
    """``basic_pitch.note_creation``, imported without basic-pitch's runtime warnings.

    ``basic_pitch/__init__`` calls ``logging.warning`` for each of TensorFlow, CoreML and TFLite
    it cannot find; on a root logger without handlers that would also install a stderr handler
    (``logging.basicConfig``). A null handler prevents that and a filter drops the records.
    """
    root = logging.getLogger()
    quiet = _QuietBasicPitchImport()
    guard = logging.NullHandler()
    root.addFilter(quiet)
    root.addHandler(guard)
    try:
        from basic_pitch import note_creation
    finally:
        root.removeHandler(guard)
        root.removeFilter(quiet)
    module: ModuleType = note_creation
    return module


def default_model_path() -> Path:
    """basic-pitch's shipped ``nmp.onnx`` (found without importing the package)."""
    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("basic-pitch is not installed (pip install --no-deps basic-pitch==0.4.0)")
    path = Path(next(iter(spec.submodule_search_locations))) / "saved_models" / "icassp_2022" / "nmp.onnx"
    if not path.is_file():
        raise RuntimeError(f"basic-pitch's ONNX model is missing: {path}")
    return path


def _check_audio(audio: object, sample_rate: object) -> tuple[NDArray[np.float32], int]:
    """Validated audio as (channels, frames) float32, and the sample rate."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
        raise TypeError(f"sample_rate must be an integer, got {sample_rate!r}")
    if not 1000 <= int(sample_rate) <= 384000:
        raise ValueError(f"sample_rate must be within [1000, 384000] Hz, got {sample_rate}")
    if not isinstance(audio, np.ndarray):
        raise TypeError(f"audio must be a numpy array, got {type(audio).__name__}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise TypeError(f"audio must be floating point (float32), got {audio.dtype}")
    if audio.ndim == 1:
        audio = audio[np.newaxis, :]
    elif audio.ndim != 2:
        raise ValueError(f"audio must be shaped (frames,) or (channels, frames), got shape {audio.shape}")
    channels, frames = audio.shape
    if not 1 <= channels <= 64:
        raise ValueError(
            f"audio must be shaped (channels, frames) with 1-64 channels, got shape {audio.shape}"
            + (" (frames, channels? transpose it)" if frames <= 64 < channels else "")
        )
    if frames == 0:
        raise ValueError("audio is empty (0 frames)")
    if not np.isfinite(audio).all():
        raise ValueError("audio contains NaN or infinite samples")
    return np.ascontiguousarray(audio, dtype=np.float32), int(sample_rate)


def _to_model_input(audio: NDArray[np.float32], sample_rate: int) -> NDArray[np.float32]:
    """Mono at 22 050 Hz, as ``librosa.load(path, sr=22050, mono=True)`` makes it."""
    mono = audio.mean(axis=0, dtype=np.float32) if audio.shape[0] > 1 else audio[0]
    if sample_rate == MODEL_SAMPLE_RATE:
        return np.ascontiguousarray(mono)
    import librosa  # already loaded with basic-pitch; soxr "HQ", librosa.load's default

    out: NDArray[np.float32] = librosa.resample(
        mono, orig_sr=sample_rate, target_sr=MODEL_SAMPLE_RATE, res_type="soxr_hq"
    ).astype(np.float32, copy=False)
    return out


def _window_view(mono: NDArray[np.float32]) -> NDArray[np.float32]:
    """The windows as a read-only strided view, (n_windows, 43 844): no copy per window."""
    padded = mono.shape[0] + OVERLAP_SAMPLES // 2
    count = -(-padded // HOP_SAMPLES)
    buffer = np.zeros((count - 1) * HOP_SAMPLES + WINDOW_SAMPLES, dtype=np.float32)
    buffer[OVERLAP_SAMPLES // 2 : padded] = mono
    view: NDArray[np.float32] = np.lib.stride_tricks.sliding_window_view(buffer, WINDOW_SAMPLES)[
        ::HOP_SAMPLES
    ]
    return view[:count]


def model_windows(mono: NDArray[np.float32]) -> NDArray[np.float32]:
    """basic-pitch's input windows for 22 050 Hz mono audio: (n_windows, 43 844, 1).

    Half the overlap (3 840 zeros) goes in front; a window starts every 36 164 samples for as
    long as the padded signal lasts, and the last one is zero-filled to full length.
    """
    return np.ascontiguousarray(_window_view(mono)[:, :, np.newaxis])


class Transcriber:
    """basic-pitch on onnxruntime, one session per instance.

    ``threads`` bounds onnxruntime's intra-op pool (the pool leaves a core to the realtime path);
    its threads do not spin between calls. ``max_batch`` bounds how many 2-second windows go
    through one session call, so memory stays flat however long the audio is.
    """

    def __init__(
        self, model_path: str | Path | None = None, threads: int = 1, *, max_batch: int = 16
    ) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        import onnxruntime as ort

        path = Path(model_path) if model_path is not None else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"transcription model not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle workers must not burn the core kept for the realtime path.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.model_path = path
        self.threads = threads
        self.max_batch = max_batch
        try:
            self._session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
            raise RuntimeError(f"cannot load the transcription model {path}: {exc}") from exc
        self._notes = _basic_pitch_note_creation()

    def model_output(
        self,
        audio: NDArray[np.floating[Any]],
        sample_rate: int,
        *,
        progress: Progress | None = None,
        cancelled: Cancelled | None = None,
    ) -> dict[str, NDArray[np.float32]]:
        """The stitched model output ``{"note", "onset", "contour"}``, (frames, 88 | 88 | 264),
        as basic-pitch's ``run_inference`` returns it for the same audio."""
        checked, rate = _check_audio(audio, sample_rate)
        mono = _to_model_input(checked, rate)
        return self._infer(mono, progress, cancelled, share=1.0)

    def _infer(
        self,
        mono: NDArray[np.float32],
        progress: Progress | None,
        cancelled: Cancelled | None,
        share: float,
    ) -> dict[str, NDArray[np.float32]]:
        windows = _window_view(mono)
        count = windows.shape[0]
        half = OVERLAP_FRAMES // 2
        # Each batch's trimmed frames go straight to their place in the stitched output, so
        # memory holds the result once (predict() keeps every window's raw output, then joins).
        stitched: dict[str, NDArray[np.float32]] = {}
        for start in range(0, count, self.max_batch):
            if cancelled is not None and cancelled():
                raise concurrent.futures.CancelledError("transcription cancelled")
            batch = np.ascontiguousarray(windows[start : start + self.max_batch, :, np.newaxis])
            results = self._session.run(list(_OUTPUTS), {_INPUT: batch})
            for key, value in zip(_KEYS, results, strict=True):
                kept = value[:, half:-half, :]
                per_window = kept.shape[1]
                if key not in stitched:
                    stitched[key] = np.empty((count * per_window, kept.shape[2]), dtype=np.float32)
                stitched[key][start * per_window : (start + kept.shape[0]) * per_window] = kept.reshape(
                    -1, kept.shape[2]
                )
            if progress is not None:
                progress(share * min(start + self.max_batch, count) / count)
        frames = math.floor(mono.shape[0] * (FRAMES_PER_SECOND / MODEL_SAMPLE_RATE))
        return {key: np.ascontiguousarray(stitched[key][:frames]) for key in _KEYS}

    def transcribe(
        self,
        audio: NDArray[np.floating[Any]],
        sample_rate: int,
        *,
        onset_threshold: float = 0.5,
        frame_threshold: float = 0.3,
        min_note_ms: float = 127.7,
        min_frequency: float | None = None,
        max_frequency: float | None = None,
        melodia_trick: bool = True,
        progress: Progress | None = None,
        cancelled: Cancelled | None = None,
    ) -> list[Note]:
        """Notes of ``audio`` (float, (frames,) or (channels, frames), any rate), sorted by start.

        The keyword arguments are ``predict()``'s: ``onset_threshold`` and ``frame_threshold``
        in (0, 1), ``min_note_ms`` the shortest note kept, ``min_frequency``/``max_frequency``
        (Hz) limit the pitch range. ``progress(fraction)`` is called after each batch;
        ``cancelled()`` is polled before each one and, once true, the call raises
        ``concurrent.futures.CancelledError``. Bad audio raises ``TypeError``/``ValueError``.
        """
        for name, value in (("onset_threshold", onset_threshold), ("frame_threshold", frame_threshold)):
            if not (isinstance(value, int | float) and 0.0 < value < 1.0):
                raise ValueError(f"{name} must be within (0, 1), got {value!r}")
        if not (isinstance(min_note_ms, int | float) and math.isfinite(min_note_ms) and min_note_ms >= 0):
            raise ValueError(f"min_note_ms must be a finite number >= 0, got {min_note_ms!r}")
        for name, limit in (("min_frequency", min_frequency), ("max_frequency", max_frequency)):
            if limit is not None and not (
                isinstance(limit, int | float) and math.isfinite(limit) and limit > 0
            ):
                raise ValueError(f"{name} must be a positive frequency in Hz, got {limit!r}")
        if min_frequency is not None and max_frequency is not None and min_frequency >= max_frequency:
            raise ValueError(f"min_frequency ({min_frequency}) must be below max_frequency ({max_frequency})")
        checked, rate = _check_audio(audio, sample_rate)
        mono = _to_model_input(checked, rate)
        output = self._infer(mono, progress, cancelled, share=0.9)
        if cancelled is not None and cancelled():
            raise concurrent.futures.CancelledError("transcription cancelled")
        if output["note"].shape[0] < 2:  # under 2 frames (23 ms): no note can start and end
            notes: list[Note] = []
        else:
            notes = self._decode(
                output,
                onset_threshold,
                frame_threshold,
                min_note_ms,
                min_frequency,
                max_frequency,
                melodia_trick,
            )
        if progress is not None:
            progress(1.0)
        return notes

    def _decode(
        self,
        output: dict[str, NDArray[np.float32]],
        onset_threshold: float,
        frame_threshold: float,
        min_note_ms: float,
        min_frequency: float | None,
        max_frequency: float | None,
        melodia_trick: bool,
    ) -> list[Note]:
        # predict()'s conversion of the minimum length to frames, kept to the letter.
        min_note_len = int(np.round(min_note_ms / 1000 * (MODEL_SAMPLE_RATE / FFT_HOP)))
        # On silence basic-pitch rescales its inferred onsets by 0/0; the NaNs it gets compare
        # false and yield no note, as in predict(), so the warning says nothing here.
        with np.errstate(invalid="ignore", divide="ignore"):
            _, events = self._notes.model_output_to_notes(
                output,
                onset_thresh=float(onset_threshold),
                frame_thresh=float(frame_threshold),
                min_note_len=min_note_len,
                min_freq=min_frequency,
                max_freq=max_frequency,
                include_pitch_bends=False,  # a Note has no bends; predict() computes, then drops them
                melodia_trick=melodia_trick,
            )
        notes = [
            Note(
                pitch=int(pitch),
                start=max(0.0, float(start)),
                duration=float(end) - max(0.0, float(start)),
                velocity=min(127, max(1, int(np.round(127 * float(amplitude))))),
            )
            for start, end, pitch, amplitude, _ in events
            if end > start
        ]
        notes.sort(key=lambda n: (n.start, n.pitch))
        return notes
