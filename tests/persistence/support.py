"""Helpers shared by the persistence tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from persistence.ports import Store


class FakeClock:
    """The stores' clock, moved by hand so ordering by time is deterministic."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


@dataclass
class Backend:
    """One database, and ways to open more stores on it and to inspect it with raw SQL."""

    kind: str
    clock: FakeClock
    _make: Callable[[], Store]
    execute: Callable[[str], Awaitable[list[tuple[Any, ...]]]]
    stores: list[Store] = field(default_factory=list)

    def make(self) -> Store:
        """Another store on the same database (a second process, as far as the store knows)."""
        store = self._make()
        self.stores.append(store)
        return store

    async def close_all(self) -> None:
        for store in self.stores:
            await store.close()
