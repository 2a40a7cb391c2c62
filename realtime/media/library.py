"""Assets end to end: upload → stored blobs and row; blobs → samples, peaks, Opus; deletion.

What an asset keeps in the `BlobStore` (keys from `AssetKeys`):

- `asset-<id>.flac`: the audio, decoded, resampled to 48 kHz and stored as 24-bit FLAC. This
  is the asset (`AssetRecord.blob_key`); `GET …/audio?format=flac` serves it as is.
- `asset-<id>.peaks`: a `PeakLevel` (min/max per 256 frames and channel, float32) written at
  upload, from which peaks at any width are derived.
- `asset-<id>.opus`: Ogg/Opus made on the first `format=opus` request and kept.

Uploads never sit in memory whole: the file is decoded block by block and transcoded into a
temporary FLAC file, both in a worker thread. Blobs are written before the row, so a listed
asset always has its audio; on any failure both blobs are removed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from persistence.blobs import BlobNotFound, BlobStore
from persistence.ports import AssetKind, AssetRecord, Store

from .cache import ByteLRU
from .decode import SAMPLE_RATE, AudioReader, Samples, decode_audio
from .encode import MIME_TYPES, AudioEncoder
from .peaks import PeakAccumulator, PeakLevel, compute_peaks, merge_channels

log = logging.getLogger(__name__)

STORED_FORMAT = "flac"
STORED_MIME = MIME_TYPES[STORED_FORMAT]
_CLIP_HIGH = np.float32(1 - 2.0**-23)  # what 24-bit storage can hold
_TEMP_PREFIX = "escenario-"
_PEAK_LEVELS_KEPT = 64


@dataclass(frozen=True, slots=True)
class AssetKeys:
    flac: str
    opus: str
    peaks: str

    @classmethod
    def of(cls, asset_id: str) -> AssetKeys:
        return cls(
            flac=f"asset-{asset_id}.flac", opus=f"asset-{asset_id}.opus", peaks=f"asset-{asset_id}.peaks"
        )

    def all(self) -> tuple[str, ...]:
        return (self.flac, self.opus, self.peaks)


@dataclass(frozen=True, slots=True)
class Ingested:
    """What decoding an upload found; `peaks` describe the stored (24-bit, clipped) audio."""

    source_sample_rate: int
    channels: int
    frames: int
    peaks: PeakLevel

    @property
    def duration_s(self) -> float:
        return self.frames / SAMPLE_RATE


def ingest_file(source: Path, flac_out: Path, *, max_duration_s: float) -> Ingested:
    """Decode `source`, write it to `flac_out` as 48 kHz 24-bit FLAC and summarise it.

    Blocking (run it in a thread). Raises the `MediaError` subclasses of `decode`.
    """
    with AudioReader(source, max_duration_s=max_duration_s) as reader:
        peaks = PeakAccumulator(reader.channels)
        with AudioEncoder(flac_out, STORED_FORMAT, reader.channels) as encoder:
            for block in reader.blocks():
                encoder.write(block)
                peaks.feed(np.clip(block, -1.0, _CLIP_HIGH))
        return Ingested(
            source_sample_rate=reader.source_sample_rate,
            channels=reader.channels,
            frames=reader.frames,
            peaks=peaks.finish(),
        )


def transcode_file(source: Path, dest: Path, fmt: str) -> None:
    """Re-encode a stored asset file into `fmt` (blocking)."""
    with AudioReader(source) as reader, AudioEncoder(dest, fmt, reader.channels) as encoder:
        for block in reader.blocks():
            encoder.write(block)


async def load_asset_samples(
    blobs: BlobStore, record: AssetRecord, *, cache: ByteLRU[Samples] | None = None
) -> Samples:
    """The asset's audio: float32 (channels, frames) at 48 kHz, read-only.

    With `cache`, decoded assets are kept (least recently used out first) and concurrent
    calls for one asset decode it once.
    """

    async def load() -> Samples:
        data = await blobs.get(record.blob_key)
        decoded = await asyncio.to_thread(decode_audio, data, expected_frames=record.frames)
        samples = decoded.samples
        if samples.shape != (record.channels, record.frames):
            log.warning(
                "asset %s decodes to shape %s; its row says (%d, %d)",
                record.id,
                samples.shape,
                record.channels,
                record.frames,
            )
        samples.flags.writeable = False  # shared by every caller: nobody may change it
        return samples

    if cache is None:
        return await load()
    return await cache.get_or_load(record.id, load)


class AssetLibrary:
    """The asset operations the API needs, over a `Store` and a `BlobStore`."""

    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        *,
        tmp_dir: Path,
        cache_bytes: int,
        max_duration_s: float,
        deletion_grace_s: float = 0.0,
    ) -> None:
        self.store = store
        # How long a deleted asset stays restorable (its blobs kept) before the hard deletion;
        # 0 deletes at once. The retention scheduler finishes due deletions.
        self.deletion_grace_s = max(0.0, float(deletion_grace_s))
        self.blobs = blobs
        self.tmp_dir = Path(tmp_dir)
        self.max_duration_s = max_duration_s
        self.samples_cache: ByteLRU[Samples] = ByteLRU(cache_bytes, lambda a: int(a.nbytes))
        self._peak_levels: OrderedDict[str, PeakLevel] = OrderedDict()
        self._opus_locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Future[None]] = set()

    # temporary files ------------------------------------------------------------------
    def temp_path(self, suffix: str) -> Path:
        """A fresh path in the temporary folder (nothing is created)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir / f"{_TEMP_PREFIX}{secrets.token_hex(8)}{suffix}"

    async def startup(self, *, stale_after_s: float = 24 * 3600) -> None:
        """Remove temporary files a crash left behind and finish interrupted deletions."""

        def clear_temp() -> int:
            if not self.tmp_dir.is_dir():
                return 0
            cutoff = time.time() - stale_after_s
            removed = 0
            for path in self.tmp_dir.glob(f"{_TEMP_PREFIX}*"):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
            return removed

        removed = await asyncio.to_thread(clear_temp)
        swept = await self.sweep_deleted()
        if removed or swept:
            log.info("asset clean-up", extra={"temp_files_removed": removed, "deletions_finished": swept})

    async def close(self) -> None:
        """Wait for cancelled uploads to be undone (call before closing the store)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # upload ---------------------------------------------------------------------------
    async def ingest(
        self,
        upload: Path,
        *,
        session_id: str,
        uploader_id: str | None,
        name: str,
        kind: AssetKind = AssetKind.SOURCE,
    ) -> tuple[AssetRecord, Ingested]:
        """Decode `upload`, store its blobs and its row. The caller removes `upload`.

        `kind` is `OUTPUT` for audio the server made (stems, masters), which is kept when the
        uploaded sources are purged.

        Raises the `MediaError` subclasses of `decode`, and the store's `NotFound` if the
        session is gone by the time the row is written. Leaves nothing behind on failure,
        cancellation included: the work in threads cannot be stopped, so a cancelled ingest
        lets it finish in the background and then undoes it.
        """
        work = asyncio.ensure_future(self._ingest(upload, session_id, uploader_id, name, kind))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            undo = asyncio.ensure_future(self._undo_when_done(work))
            self._background.add(undo)
            undo.add_done_callback(self._background.discard)
            raise

    async def _undo_when_done(self, work: asyncio.Future[tuple[AssetRecord, Ingested]]) -> None:
        try:
            record, _ = await work
        except BaseException:
            return  # `_ingest` removed what it had written
        await self.delete(record)

    async def _ingest(
        self,
        upload: Path,
        session_id: str,
        uploader_id: str | None,
        name: str,
        kind: AssetKind = AssetKind.SOURCE,
    ) -> tuple[AssetRecord, Ingested]:
        flac_tmp = self.temp_path(".flac")
        asset_id = secrets.token_hex(16)
        keys = AssetKeys.of(asset_id)
        writing = False
        try:
            ingested = await asyncio.to_thread(
                ingest_file, upload, flac_tmp, max_duration_s=self.max_duration_s
            )
            writing = True
            size = await self.blobs.put(keys.flac, flac_tmp)
            await self.blobs.put(keys.peaks, await asyncio.to_thread(ingested.peaks.to_bytes))
            record = await self.store.create_asset(
                asset_id=asset_id,
                session_id=session_id,
                uploader_id=uploader_id,
                name=name,
                kind=kind,
                mime=STORED_MIME,
                duration_s=ingested.duration_s,
                sample_rate=SAMPLE_RATE,
                channels=ingested.channels,
                frames=ingested.frames,
                size_bytes=size,
                blob_key=keys.flac,
            )
        except BaseException:
            if writing:
                await self._delete_blobs(keys)
            raise
        finally:
            await asyncio.to_thread(_unlink, flac_tmp)
        self._remember_peaks(asset_id, ingested.peaks)
        return record, ingested

    # reading --------------------------------------------------------------------------
    async def samples(self, record: AssetRecord) -> Samples:
        return await load_asset_samples(self.blobs, record, cache=self.samples_cache)

    async def peaks(self, record: AssetRecord, width: int) -> tuple[Samples, Samples]:
        """Merged (min, max) over channels for `width` slices (see `peaks`)."""
        level = await self._peak_level(record)
        if width > level.bins:
            # Finer than the stored level: slice the samples themselves.
            samples = await self.samples(record)
            return await asyncio.to_thread(lambda: merge_channels(*compute_peaks(samples, width)))
        return await asyncio.to_thread(level.peaks, width)

    async def _peak_level(self, record: AssetRecord) -> PeakLevel:
        level = self._peak_levels.get(record.id)
        if level is not None:
            self._peak_levels.move_to_end(record.id)
            return level
        key = AssetKeys.of(record.id).peaks
        try:
            level = await asyncio.to_thread(PeakLevel.from_bytes, await self.blobs.get(key))
        except (BlobNotFound, ValueError):
            # Assets made without peaks (or with a damaged copy) get them now, once.
            samples = await self.samples(record)
            accumulator = PeakAccumulator(samples.shape[0])
            await asyncio.to_thread(accumulator.feed, samples)
            level = await asyncio.to_thread(accumulator.finish)
            await self.blobs.put(key, await asyncio.to_thread(level.to_bytes))
        self._remember_peaks(record.id, level)
        return level

    def _remember_peaks(self, asset_id: str, level: PeakLevel) -> None:
        self._peak_levels[asset_id] = level
        self._peak_levels.move_to_end(asset_id)
        while len(self._peak_levels) > _PEAK_LEVELS_KEPT:
            self._peak_levels.popitem(last=False)

    async def audio_key(self, record: AssetRecord, fmt: str) -> str:
        """The blob holding the asset in `fmt` ("flac" or "opus"), made on first use."""
        keys = AssetKeys.of(record.id)
        if fmt == STORED_FORMAT:
            return record.blob_key
        if fmt != "opus":
            raise ValueError(f"no {fmt!r} rendition of assets")
        # One transcode per asset at a time; the lock goes with the asset (`_finish_deletion`).
        async with self._opus_locks.setdefault(record.id, asyncio.Lock()):
            if not await self.blobs.exists(keys.opus):
                await self._transcode(record, keys.opus, "opus")
        return keys.opus

    async def _transcode(self, record: AssetRecord, key: str, fmt: str) -> None:
        source = self.temp_path(".flac")
        dest = self.temp_path(f".{fmt}")
        try:
            await self._blob_to_file(record.blob_key, source)
            await asyncio.to_thread(transcode_file, source, dest, fmt)
            await self.blobs.put(key, dest)
        finally:
            await asyncio.shield(asyncio.to_thread(_unlink_all, source, dest))
        if await self.store.get_asset(record.id) is None:
            # Deleted while we transcoded: the deletion could not see this blob.
            await self.blobs.delete(key)
            raise BlobNotFound(key)

    async def _blob_to_file(self, key: str, path: Path) -> None:
        handle = await asyncio.to_thread(open, path, "xb")
        try:
            async for chunk in self.blobs.stream(key):
                await asyncio.to_thread(handle.write, chunk)
        finally:
            handle.close()

    # deletion -------------------------------------------------------------------------
    async def delete(self, record: AssetRecord) -> bool:
        """Hide the asset; with no grace period also remove its blobs, then its row.

        With a grace period the blobs and the row stay until `sweep_deleted` finds the
        deletion due, and `Store.restore_asset` can undo it until then. False if the asset
        was already going."""
        if not await self.store.mark_asset_deleted(record.id):
            return False
        if self.deletion_grace_s <= 0:
            await self._finish_deletion(record)
        return True

    async def purge_source(self, record: AssetRecord, *, at: float, reason: str) -> bool:
        """Remove an asset's audio but keep its row, marked purged with `reason`.

        Blobs go first, so a crash leaves the asset due for purging again rather than marked
        purged with its audio still stored; they are removed once more after the mark, in
        case a rendition (opus, peaks) was made from the audio in between. False if the asset
        was already purged or is gone."""
        keys = AssetKeys.of(record.id)
        self._forget(record.id)
        await self._delete_blobs(keys)
        if record.blob_key not in keys.all():
            await self.blobs.delete(record.blob_key)
        marked = await self.store.mark_asset_purged(record.id, at=at, reason=reason)
        self._forget(record.id)
        await self._delete_blobs(keys)
        return marked

    async def purge_session(self, session_id: str) -> int:
        """Remove the blobs of every asset of a session, before the session itself goes."""
        records = await self.store.list_assets(session_id, include_deleted=True)
        for record in records:
            await self.store.mark_asset_deleted(record.id)
        for record in records:
            await self._finish_deletion(record)
        return len(records)

    async def sweep_deleted(self, now: float | None = None) -> int:
        """Finish deletions that are due: begun at least the grace period before `now`
        (also those a crash interrupted: rows hidden, blobs maybe still there)."""
        cutoff = (time.time() if now is None else now) - self.deletion_grace_s
        done = 0
        while batch := await self.store.list_deleted_assets_before(cutoff, limit=100):
            for record in batch:
                await self._finish_deletion(record)
                done += 1
        return done

    async def finish_deletion(self, record: AssetRecord) -> None:
        """Hard-delete an asset whose deletion began (`delete`): its blobs, then its row."""
        await self._finish_deletion(record)

    def _forget(self, asset_id: str) -> None:
        self.samples_cache.discard(asset_id)
        self._peak_levels.pop(asset_id, None)
        self._opus_locks.pop(asset_id, None)

    async def _finish_deletion(self, record: AssetRecord) -> None:
        self._forget(record.id)
        keys = AssetKeys.of(record.id)
        await self._delete_blobs(keys)
        if record.blob_key not in keys.all():
            await self.blobs.delete(record.blob_key)
        await self.store.delete_asset(record.id)

    async def _delete_blobs(self, keys: AssetKeys) -> None:
        for key in keys.all():
            await self.blobs.delete(key)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def _unlink_all(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
