"""A least-recently-used cache bounded by bytes, with one load in flight per key."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

_V = TypeVar("_V")


class ByteLRU(Generic[_V]):
    """Values sized by `size_of`; the least recently used go first when `max_bytes` is passed.

    A value larger than the whole budget is returned but not kept. Concurrent `get_or_load`
    calls for one key share a single load.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[_V], int]) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._size_of = size_of
        self._items: OrderedDict[str, tuple[_V, int]] = OrderedDict()
        self._loading: dict[str, asyncio.Future[_V]] = {}
        self._stale: set[str] = set()
        self.bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> _V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: str, value: _V) -> None:
        self._remove(key)
        size = self._size_of(value)
        if size > self.max_bytes:
            return
        self._items[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes -= evicted

    def discard(self, key: str) -> None:
        """Forget `key`; a load in flight for it is returned to its callers but not kept."""
        self._remove(key)
        if key in self._loading:
            self._stale.add(key)

    def _remove(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    async def get_or_load(self, key: str, load: Callable[[], Awaitable[_V]]) -> _V:
        while True:
            cached = self.get(key)
            if cached is not None:
                return cached
            pending = self._loading.get(key)
            if pending is None:
                break
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled():
                    continue  # the caller that was loading it went away, not this one: load again
                raise
        future: asyncio.Future[_V] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        try:
            value = await load()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: nobody may be waiting
            raise
        finally:
            del self._loading[key]
            stale = key in self._stale
            self._stale.discard(key)
        future.set_result(value)
        if not stale:
            self.put(key, value)
        return value
