"""The objects every endpoint needs, built once by the composition root (`app.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from persistence.blobs import BlobStore
from persistence.ports import Store

from .accounts import Accounts
from .config import Settings
from .media.library import AssetLibrary
from .preview import PreviewHub
from .session.hub import RoomManager
from .transport.limits import KeyedRateLimiter


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
