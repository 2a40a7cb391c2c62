"""Device copies of the effects' host state arrays, for the GPU graph (:mod:`.gpu_graph`).

The GPU graph keeps the CPU graph's effect objects; their state arrays on the host are never
touched by a kernel, so they hold the state of a fresh or just-reset effect. The device copies
made here are what the kernels carry forward from block to block. Copies are keyed by the host
array's identity (the entry holds the host array, so its id cannot be reused):

- :meth:`DeviceState.get` — one device array per host array (delay lines, reverb tanks, …);
- :meth:`DeviceState.pool` — a :class:`SlotPool` per kind of state that batched kernels run
  for many effects at once: every effect's array is a slot of one device array.

``reload()`` uploads every host array again (after the effects' ``reset`` wrote their initial
values); ``prune()`` forgets what no kernel asked for since the last prune (effects that left
the graph or are bypassed), so an effect that comes back starts from its host state, as a reset
one does; ``forget(owner)`` does that at once for one effect's arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["DeviceState", "SlotPool"]


class SlotPool:
    """Host arrays of one rank and dtype stacked in one device array, ``array[slot]`` each.

    Batched kernels take :attr:`array` and each effect's :meth:`slot`; single-effect kernels
    take :meth:`view`, the effect's slot. Slots are zero-padded to the
    largest shape seen; the array grows (a copy) when an array needs more room, so an
    :attr:`array` or a view is valid until the next ``slot``/``view`` call.
    """

    def __init__(self, xp: ModuleType, dtype: type[np.generic]) -> None:
        self._xp = xp
        self._dtype = dtype
        self.array: Any = None
        self._slots: dict[int, tuple[np.ndarray, int]] = {}
        self._free: list[int] = []
        self._used: set[int] = set()

    def __len__(self) -> int:
        return len(self._slots)

    def slot(self, host: np.ndarray) -> int:
        key = id(host)
        entry = self._slots.get(key)
        if entry is None or entry[0] is not host:
            entry = (host, self._allocate(host.shape))
            self._slots[key] = entry
            self._write(entry[1], host)
        self._used.add(key)
        return entry[1]

    def view(self, host: np.ndarray) -> Any:
        """``array[slot(host)]``: the whole zero-padded slot (contiguous), whose leading part is the
        host array's copy; kernels index only that part."""
        index = self.slot(host)  # first: it may allocate or grow the array
        return self.array[index]

    def _allocate(self, shape: tuple[int, ...]) -> int:
        xp = self._xp
        if self.array is None:
            self.array = xp.zeros((4, *shape), dtype=self._dtype)
            self._free = [0, 1, 2, 3]
        dims = tuple(self.array.shape[1:])
        if len(dims) != len(shape):
            raise ValueError(f"a pool of rank-{len(dims)} arrays cannot hold shape {shape}")
        need = tuple(max(a, b) for a, b in zip(dims, shape, strict=True))
        capacity = self.array.shape[0]
        grow = capacity if not self._free else 0
        if need != dims or grow:
            grown = xp.zeros((capacity + grow, *need), dtype=self._dtype)
            grown[(slice(0, capacity), *(slice(0, d) for d in dims))] = self.array
            self.array = grown
            self._free.extend(range(capacity, capacity + grow))
        self._free.sort()
        return self._free.pop(0)

    def _write(self, index: int, host: np.ndarray) -> None:
        self.array[index] = 0
        self.array[(index, *(slice(0, d) for d in host.shape))] = self._xp.asarray(host)

    def reload(self) -> None:
        for host, index in self._slots.values():
            self._write(index, host)

    def prune(self) -> None:
        for key in [k for k in self._slots if k not in self._used]:
            self._free.append(self._slots.pop(key)[1])
        self._used = set()

    def forget(self, host: np.ndarray) -> None:
        entry = self._slots.get(id(host))
        if entry is not None and entry[0] is host:
            del self._slots[id(host)]
            self._free.append(entry[1])


class DeviceState:
    """Device copies of host arrays, keyed by the host array's identity; see the module docstring."""

    def __init__(self, xp: ModuleType) -> None:
        self._xp = xp
        self._arrays: dict[int, tuple[np.ndarray, Any]] = {}  # id → (host, device)
        self._used: set[int] = set()
        self._pools: dict[str, SlotPool] = {}

    def __len__(self) -> int:
        return len(self._arrays) + sum(len(p) for p in self._pools.values())

    def get(self, host: np.ndarray) -> Any:
        key = id(host)
        entry = self._arrays.get(key)
        if entry is None or entry[0] is not host:
            entry = (host, self._xp.array(host))
            self._arrays[key] = entry
        self._used.add(key)
        return entry[1]

    def pool(self, name: str, dtype: type[np.generic] = np.float64) -> SlotPool:
        """The pool ``name`` (created on first use, for arrays of ``dtype``)."""
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = SlotPool(self._xp, dtype)
        return pool

    def reload(self) -> None:
        for host, device in self._arrays.values():
            device[...] = self._xp.asarray(host)
        for pool in self._pools.values():
            pool.reload()

    def prune(self) -> None:
        self._arrays = {k: v for k, v in self._arrays.items() if k in self._used}
        self._used = set()
        for pool in self._pools.values():
            pool.prune()

    def retain(self, hosts: Iterable[np.ndarray]) -> None:
        """Keep (and upload) exactly ``hosts`` of the single copies; forget every other one."""
        keep = {id(h): h for h in hosts}
        self._arrays = {k: v for k, v in self._arrays.items() if k in keep and v[0] is keep[k]}
        for host in keep.values():
            self.get(host)
        self._used = set()

    def forget(self, owner: object) -> None:
        """Drop the copies of ``owner``'s array attributes: the next use uploads them afresh."""
        for value in vars(owner).values():
            if isinstance(value, np.ndarray):
                self._arrays.pop(id(value), None)
                for pool in self._pools.values():
                    pool.forget(value)
