"""Data export (issue 7, docs/privacy.md): a zip of everything that is the user's.

`POST /api/me/export` starts a job; `GET /api/me/export/{id}` shows its progress and, once it
is done, a download link signed with HMAC-SHA256 under a server secret
(`data_dir/keys/export-signing.key`, made on first use) that expires after `LINK_TTL_S`. The
link works without sign-in headers (a browser can follow it); a wrong or expired signature is
403.

The archive is stored through the `BlobStore` (so encrypted at rest like every audio blob) and
deleted when its link expires (checked whenever exports are touched) or when the account is
erased. It holds:

* `account.json`: the account and its consent;
* `sessions/<id>/document.json` and `document.yjs`: each owned session's document as JSON and
  as a Yjs state update, and `mixdown.wav` (skipped, with the reason in `manifest.json`, when
  the session is empty or longer than `max_render_s`);
* `assets/<id>-<name>.<ext>`: every asset the user owns (in their sessions) or uploaded or
  produced elsewhere, as stored (FLAC), decrypted; purged sources are listed, without audio;
* `audit.json`: the user's audit entries; `manifest.json`: what is where.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pycrdt

from persistence.blobs import BlobNotFound
from persistence.ports import AssetRecord, Role, User

from .dsp.render import plan_render
from .media.mixdown import safe_filename, write_mixdown
from .services import Services
from .session.schema import read_document

log = logging.getLogger(__name__)

LINK_TTL_S = 24 * 3600.0
KEY_FILE = "export-signing.key"
_DOC_ROOTS: dict[str, type[Any]] = {
    "session": pycrdt.Map,
    "tracks": pycrdt.Map,
    "trackOrder": pycrdt.Array,
    "jobs": pycrdt.Map,
}


def signing_key(data_dir: Path, name: str = KEY_FILE) -> bytes:
    """A server secret in the keys folder that signs links (32 random bytes, created 0600 once)."""
    path = Path(data_dir) / "keys" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    key = path.read_bytes()
    if len(key) < 32:
        raise RuntimeError(f"{path} is damaged: delete it to make a new one (open links stop working)")
    return key


def sign(key: bytes, export_id: str, expires: int) -> str:
    return hmac.new(key, f"{export_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def signature_ok(key: bytes, export_id: str, expires: str, sig: str, *, now: float) -> bool:
    """Whether `sig` signs (`export_id`, `expires`) and `expires` is still ahead of `now`."""
    if not expires.isdigit() or len(expires) > 12 or len(sig) != 64:
        return False
    if not hmac.compare_digest(sign(key, export_id, int(expires)), sig):
        return False
    return int(expires) > now


@dataclass
class ExportJob:
    id: str
    user_id: str
    created_at: float
    status: str = "queued"  # queued | running | done | failed
    progress: float = 0.0
    error: str | None = None
    expires_at: float | None = None
    size_bytes: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def blob_key(self) -> str:
        return f"export-{self.id}.zip"


def document_json(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    return {name: doc.get(name, type=kind).to_py() for name, kind in _DOC_ROOTS.items()}


class Exports:
    """The export jobs of one server (in memory: a restart forgets them and their archives go
    at the next sweep by key)."""

    def __init__(self, svc: Services, *, ttl_s: float = LINK_TTL_S) -> None:
        self.svc = svc
        self.ttl_s = ttl_s
        self.jobs: dict[str, ExportJob] = {}
        self._key = signing_key(svc.settings.data_dir)

    async def sweep_orphans(self) -> int:
        """Delete archives no job knows (left by an earlier run: jobs live in memory only).

        The port has no listing; the stores under it (files, or S3 with `--blob-url`) do."""
        from persistence.encrypted_blobs import list_keys

        inner = getattr(self.svc.blobs, "inner", self.svc.blobs)  # under encryption at rest
        known = {job.blob_key for job in self.jobs.values()}
        found = [k for k in await list_keys(inner) if k.startswith("export-") and k.endswith(".zip")]
        orphans = [name for name in found if name not in known]
        for name in orphans:
            await self.svc.blobs.delete(name)
        return len(orphans)

    def link(self, job: ExportJob) -> str:
        assert job.expires_at is not None
        exp = int(job.expires_at)
        return f"/api/me/export/{job.id}/download?exp={exp}&sig={sign(self._key, job.id, exp)}"

    def verify(self, export_id: str, exp: str, sig: str) -> bool:
        return signature_ok(self._key, export_id, exp, sig, now=time.time())

    def start(self, user: User) -> ExportJob:
        job = ExportJob(id=secrets.token_hex(12), user_id=user.id, created_at=time.time())
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, user), name=f"export-{job.id}")
        return job

    def get(self, export_id: str, user_id: str) -> ExportJob | None:
        job = self.jobs.get(export_id)
        return job if job is not None and job.user_id == user_id else None

    async def sweep(self, now: float | None = None) -> int:
        """Delete the archives whose links expired; how many."""
        now = time.time() if now is None else now
        gone = [j for j in self.jobs.values() if j.expires_at is not None and j.expires_at <= now]
        for job in gone:
            await self.forget(job)
        return len(gone)

    async def forget(self, job: ExportJob) -> None:
        self.jobs.pop(job.id, None)
        if job.task is not None and not job.task.done():
            job.task.cancel()
        await self.svc.blobs.delete(job.blob_key)

    async def forget_user(self, user_id: str) -> None:
        for job in [j for j in self.jobs.values() if j.user_id == user_id]:
            await self.forget(job)

    async def close(self) -> None:
        for job in list(self.jobs.values()):
            if job.task is not None and not job.task.done():
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job.task

    # the job ----------------------------------------------------------------------------
    async def _run(self, job: ExportJob, user: User) -> None:
        path = self.svc.assets.temp_path(".zip")
        job.status = "running"
        try:
            await self._build(job, user, path)
            job.size_bytes = await self.svc.blobs.put(job.blob_key, path)
            job.expires_at = time.time() + self.ttl_s
            job.progress = 1.0
            job.status = "done"
        except asyncio.CancelledError:
            job.status = "failed"
            job.error = "cancelled"
            raise
        except Exception as exc:
            log.exception("export %s failed", job.id)
            job.status = "failed"
            job.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            path.unlink(missing_ok=True)

    async def _build(self, job: ExportJob, user: User, path: Path) -> None:
        svc = self.svc
        store = svc.store
        consent = await store.get_consent(user.id)
        from .api.common import consent_json, user_json  # the API's shapes, one definition

        rows = await store.list_sessions(user.id)
        owned = [s for s, role in rows if role is Role.OWNER]
        others = [s for s, role in rows if role is not Role.OWNER]
        manifest: dict[str, Any] = {"sessions": {}, "assets": {}, "format": 1}
        zf = await asyncio.to_thread(zipfile.ZipFile, path, "w", zipfile.ZIP_DEFLATED)
        try:

            def put(name: str, data: bytes | str) -> None:
                zf.writestr(name, data)

            def put_json(name: str, value: Any) -> None:
                put(name, json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True))

            await asyncio.to_thread(
                put_json,
                "account.json",
                {"user": user_json(user), "consent": None if consent is None else consent_json(consent)},
            )
            steps = max(1, len(owned) + len(others) + 1)
            for i, session in enumerate(owned):
                manifest["sessions"][session.id] = await self._session(
                    zf, session.id, session.title, put, put_json
                )
                for record in await store.list_assets(session.id):
                    manifest["assets"][record.id] = await self._asset(zf, record)
                job.progress = round(0.9 * (i + 1) / steps, 4)
            for i, session in enumerate(others, start=len(owned)):
                for record in await store.list_assets(session.id):
                    if record.uploader_id == user.id:
                        manifest["assets"][record.id] = await self._asset(zf, record)
                job.progress = round(0.9 * (i + 1) / steps, 4)
            entries: list[dict[str, Any]] = []
            before: int | None = None
            from .api.me import audit_json

            while batch := await store.list_audit(user_id=user.id, before_id=before, limit=500):
                entries.extend(audit_json(e) for e in batch)
                before = batch[-1].id
                if len(batch) < 500:
                    break
            await asyncio.to_thread(put_json, "audit.json", entries)
            await asyncio.to_thread(put_json, "manifest.json", manifest)
        finally:
            await asyncio.to_thread(zf.close)

    async def _session(
        self, zf: zipfile.ZipFile, sid: str, title: str, put: Any, put_json: Any
    ) -> dict[str, Any]:
        svc = self.svc
        runner = await svc.rooms.acquire(sid)
        doc = runner.room.doc
        folder = f"sessions/{sid}"
        await asyncio.to_thread(put_json, f"{folder}/document.json", document_json(doc))
        await asyncio.to_thread(put, f"{folder}/document.yjs", doc.get_update())
        entry: dict[str, Any] = {"title": title, "document": f"{folder}/document.json"}
        parsed = read_document(doc)
        samples: dict[str, np.ndarray] = {}
        for asset_id in sorted({c.asset_id for t in parsed.tracks for c in t.clips}):
            record = await svc.store.get_asset(asset_id) if len(asset_id) <= 64 else None
            if record is None or record.session_id != sid or record.purged_at is not None:
                continue
            with contextlib.suppress(Exception):  # unreadable audio renders as silence
                samples[asset_id] = await svc.assets.samples(record)
        plan = plan_render(parsed, lambda a: samples[a].shape[-1] if a in samples else None)
        if plan.frames == 0:
            entry["mixdown"] = None
            entry["mixdown_skipped"] = "the session is empty"
        elif plan.duration_s > svc.settings.max_render_s:
            entry["mixdown"] = None
            entry["mixdown_skipped"] = f"longer than max_render_s ({svc.settings.max_render_s:g} s)"
        else:
            wav = svc.assets.temp_path(".wav")
            try:
                await asyncio.to_thread(write_mixdown, wav, parsed, samples, "wav")
                await asyncio.to_thread(zf.write, wav, f"{folder}/mixdown.wav")
            finally:
                wav.unlink(missing_ok=True)
            entry["mixdown"] = f"{folder}/mixdown.wav"
        return entry

    async def _asset(self, zf: zipfile.ZipFile, record: AssetRecord) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": record.name,
            "kind": record.kind.value,
            "session_id": record.session_id,
        }
        if record.purged_at is not None:
            entry["file"] = None
            entry["purged"] = record.purge_reason
            return entry
        ext = record.blob_key.rsplit(".", 1)[-1] if "." in record.blob_key else "bin"
        name = f"assets/{record.id}-{safe_filename(record.name, 'asset')}.{ext}"
        try:
            data = await self.svc.blobs.get(record.blob_key)
        except BlobNotFound:
            entry["file"] = None
            entry["missing"] = True
            return entry
        await asyncio.to_thread(zf.writestr, name, data)
        entry["file"] = name
        return entry
