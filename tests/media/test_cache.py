"""The byte-bounded LRU that keeps decoded assets."""

from __future__ import annotations

import asyncio

import pytest

from realtime.media.cache import ByteLRU


def test_evicts_least_recently_used_by_bytes() -> None:
    cache: ByteLRU[bytes] = ByteLRU(10, len)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now the most recent
    cache.put("c", b"cccc")
    assert "b" not in cache
    assert "a" in cache
    assert "c" in cache
    assert cache.bytes == 8
    cache.put("huge", b"x" * 11)  # larger than the budget: not kept
    assert "huge" not in cache
    assert cache.bytes == 8
    cache.discard("a")
    assert cache.bytes == 4
    assert len(cache) == 1


async def test_concurrent_loads_share_one() -> None:
    cache: ByteLRU[bytes] = ByteLRU(100, len)
    calls = 0

    async def load() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return b"value"

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(5)))
    assert results == [b"value"] * 5
    assert calls == 1
    assert await cache.get_or_load("k", load) == b"value"
    assert calls == 1


async def test_failed_and_discarded_loads_are_not_kept() -> None:
    cache: ByteLRU[bytes] = ByteLRU(100, len)

    async def fail() -> bytes:
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        await cache.get_or_load("k", fail)
    assert "k" not in cache

    async def slow() -> bytes:
        await asyncio.sleep(0.01)
        return b"old"

    task = asyncio.create_task(cache.get_or_load("k", slow))
    await asyncio.sleep(0)
    cache.discard("k")  # e.g. the asset was deleted meanwhile
    assert await task == b"old"
    assert "k" not in cache


async def test_a_cancelled_loader_does_not_fail_its_waiters() -> None:
    cache: ByteLRU[bytes] = ByteLRU(100, len)
    started = asyncio.Event()

    async def slow() -> bytes:
        started.set()
        await asyncio.sleep(10)
        return b"never"

    async def quick() -> bytes:
        return b"fresh"

    loader = asyncio.create_task(cache.get_or_load("k", slow))
    await started.wait()
    waiter = asyncio.create_task(cache.get_or_load("k", quick))
    await asyncio.sleep(0)
    loader.cancel()
    assert await waiter == b"fresh"
