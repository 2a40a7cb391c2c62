"""The objects every endpoint needs, built once by the composition root (`app.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from persistence.blobs import BlobStore
from persistence.ports import Store

from .accounts import Accounts
from .audit import AuditLog
from .config import Settings
from .jam.sessions import JamSessions
from .media.library import AssetLibrary
from .preview import PreviewHub
from .session.hub import RoomManager
from .transport.limits import KeyedRateLimiter

if TYPE_CHECKING:
    from inference.service import JobService


@dataclass(slots=True)
class Services:
    settings: Settings
    store: Store
    accounts: Accounts
    rooms: RoomManager
    connect_limiter: KeyedRateLimiter
    blobs: BlobStore
    assets: AssetLibrary
    preview: PreviewHub
    # Inference jobs (separate / transcribe / master); None only in tests that build Services by hand.
    jobs: JobService | None = None
    # Live jams (one engine per session) and the Prometheus registry of GET /metrics.
    jam: JamSessions = field(default_factory=JamSessions)
    metrics: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=False))
    # The append-only audit log (realtime/audit.py); None only in tests that build Services by hand.
    audit: AuditLog | None = None
