"""Login lockout with exponential backoff, per account (pure; the clock is injected).

After `free_failures` wrong passwords in a row an account is locked for `base_s`, doubling
with each further failure up to `max_s`; a successful login clears it. Keyed on the
lower-cased e-mail, so guessing passwords for one account slows down whichever address
the guesses come from, while other accounts are unaffected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int
    locked_until: float


class LoginLockout:
    def __init__(
        self,
        *,
        free_failures: int = 5,
        base_s: float = 30.0,
        max_s: float = 15 * 60.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._free = free_failures
        self._base = base_s
        self._max = max_s
        self._max_keys = max_keys
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0 when it may now)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.locked_until - self._clock())

    def failed(self, key: str) -> None:
        record = self._records.pop(key, None) or _Record(0, 0.0)
        record.failures += 1
        over = record.failures - self._free
        if over >= 0:
            record.locked_until = self._clock() + min(self._max, self._base * 2**over)
        self._records[key] = record
        if len(self._records) > self._max_keys:
            self._records.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)
