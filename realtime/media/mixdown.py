"""Mixdown files: a session rendered offline (:mod:`realtime.dsp.render`) and encoded as it renders.

`write_mixdown` is blocking (run it in a worker thread); the mixdown API and `escenario render`
both use it, so they produce the same bytes for the same document and options.

Formats (`MIXDOWN_FORMATS`): `wav` and `flac` (24-bit; `dither=True` adds TPDF dither before
rounding, see `dither`), `mp3` (LAME, 320 kbit/s stereo) and `ogg` (Opus in Ogg, 128 kbit/s
stereo). With `stems=True` the file is a zip (stored, not compressed: audio does not compress)
holding one file per track, named after the track.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import unicodedata
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..dsp.graph import AssetSource
from ..dsp.render import RenderPlan, render_to
from ..session.schema import SessionDocument
from .dither import Tpdf24
from .encode import AudioEncoder, encoder_available

__all__ = [
    "MIXDOWN_FORMATS",
    "MixdownFormat",
    "render_files",
    "safe_filename",
    "stem_names",
    "write_mixdown",
]


@dataclass(frozen=True, slots=True)
class MixdownFormat:
    name: str  # as in the API: wav, flac, mp3, ogg
    codec: str  # the `encode` format
    extension: str
    mime: str
    lossless: bool

    @property
    def available(self) -> bool:
        return encoder_available(self.codec)


MIXDOWN_FORMATS: dict[str, MixdownFormat] = {
    "wav": MixdownFormat("wav", "wav", ".wav", "audio/wav", True),
    "flac": MixdownFormat("flac", "flac", ".flac", "audio/flac", True),
    "mp3": MixdownFormat("mp3", "mp3", ".mp3", "audio/mpeg", False),
    "ogg": MixdownFormat("ogg", "opus", ".ogg", "audio/ogg", False),
}
ZIP_MIME = "application/zip"

_UNSAFE = re.compile(r'[\\/:*?"<>|]')


def safe_filename(name: str, fallback: str, max_len: int = 100) -> str:
    """``name`` usable as a file name on common systems (no separators, controls or odd spacing)."""
    text = unicodedata.normalize("NFC", name)
    text = "".join(" " if unicodedata.category(c).startswith(("C", "Z")) else c for c in text)
    text = _UNSAFE.sub("_", text)
    text = " ".join(text.split()).strip(" .")
    return text[:max_len].strip(" .") or fallback


def stem_names(doc: SessionDocument, extension: str) -> dict[str, str]:
    """Track id → the stem's file name in the zip: the track's name, made unique."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for track in doc.tracks:
        base = safe_filename(track.name, "Track")
        candidate = base
        k = 2
        while candidate.lower() in taken:
            candidate = f"{base} ({k})"
            k += 1
        taken.add(candidate.lower())
        names[track.id] = candidate + extension
    return names


class _EncodingSink:
    """A `RenderSink` writing the mix, or every stem, through `AudioEncoder`s."""

    def __init__(
        self,
        fmt: MixdownFormat,
        mix_path: Path | None,
        stem_paths: Mapping[str, Path] | None,
        dither: bool,
    ) -> None:
        self._stack = contextlib.ExitStack()
        self._dither = dither and fmt.lossless
        self._mix: AudioEncoder | None = None
        self._mix_dither = Tpdf24() if self._dither else None
        self._stems: dict[str, tuple[AudioEncoder, Tpdf24 | None]] = {}
        if mix_path is not None:
            self._mix = self._stack.enter_context(AudioEncoder(mix_path, fmt.codec, 2))
        for tid, path in (stem_paths or {}).items():
            encoder = self._stack.enter_context(AudioEncoder(path, fmt.codec, 2))
            self._stems[tid] = (encoder, Tpdf24() if self._dither else None)

    def mix(self, block: npt.NDArray[np.float32]) -> None:
        if self._mix is not None:
            self._mix.write(self._mix_dither(block) if self._mix_dither is not None else block)

    def stems(self, blocks: Mapping[str, npt.NDArray[np.float32]]) -> None:
        for tid, block in blocks.items():
            entry = self._stems.get(tid)
            if entry is not None:
                encoder, dither = entry
                encoder.write(dither(block) if dither is not None else block)

    def close(self) -> None:
        """Finish every file."""
        self._stack.close()

    def abandon(self) -> None:
        """Release the encoders after an error (the files are incomplete)."""
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("render failed"), None)


def render_files(
    doc: SessionDocument,
    assets: Mapping[str, np.ndarray] | AssetSource,
    fmt: str,
    *,
    mix: Path | None = None,
    stems_dir: Path | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
    dither: bool = False,
    workers: int = 1,
    block: int = 4096,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> RenderPlan:
    """Render ``doc`` into ``mix`` and/or one file per track in ``stems_dir`` (named by `stem_names`).

    Blocking. On any error (``RenderCancelled`` included) the files written so far are removed.
    Raises ``ValueError`` for an unknown format or a bad range.
    """
    if fmt not in MIXDOWN_FORMATS:
        raise ValueError(f"unknown mixdown format {fmt!r}; use one of {', '.join(MIXDOWN_FORMATS)}")
    spec = MIXDOWN_FORMATS[fmt]
    stem_paths: dict[str, Path] | None = None
    if stems_dir is not None:
        stem_paths = {tid: Path(stems_dir) / name for tid, name in stem_names(doc, spec.extension).items()}
    written = [p for p in [mix, *(stem_paths or {}).values()] if p is not None]
    sink: _EncodingSink | None = None
    try:
        if stems_dir is not None:
            Path(stems_dir).mkdir(parents=True, exist_ok=True)
        sink = _EncodingSink(spec, mix, stem_paths, dither)
        plan = render_to(
            sink,
            doc,
            assets,
            start_s=start_s,
            end_s=end_s,
            block=block,
            workers=workers,
            stems=stem_paths is not None,
            progress=progress,
            cancel=cancel,
        )
        sink.close()
    except BaseException:
        if sink is not None:
            sink.abandon()
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return plan


def write_mixdown(
    dest: Path,
    doc: SessionDocument,
    assets: Mapping[str, np.ndarray] | AssetSource,
    fmt: str,
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    dither: bool = False,
    stems: bool = False,
    workers: int = 1,
    block: int = 4096,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> RenderPlan:
    """Render ``doc`` to the file ``dest`` in ``fmt``, or with ``stems=True`` to a zip of stems.

    Blocking. On any error (``RenderCancelled`` included) nothing is left at ``dest``.
    """
    dest = Path(dest)
    options: dict[str, Any] = {
        "start_s": start_s,
        "end_s": end_s,
        "dither": dither,
        "workers": workers,
        "block": block,
        "progress": progress,
        "cancel": cancel,
    }
    if not stems:
        return render_files(doc, assets, fmt, mix=dest, **options)
    stem_dir = dest.with_name(dest.name + ".stems")
    try:
        stem_dir.mkdir(parents=True, exist_ok=False)
        plan = render_files(doc, assets, fmt, stems_dir=stem_dir, **options)
        names = stem_names(doc, MIXDOWN_FORMATS[fmt].extension)
        with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in names.values():
                archive.write(stem_dir / name, name)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(stem_dir, ignore_errors=True)
    return plan
