"""`JobQueue` on Redis Streams with one consumer group: many servers, many workers.

Layout (every key starts with `prefix`, so deployments and tests can share a Redis):

- `{prefix}:jobs:{priority}:{kind}` — one stream per priority and kind, all read through the
  consumer group `group`. Per kind, so a worker that serves only some kinds never takes a job
  it would have to hand back; per priority, so interactive work is served first.
- `{prefix}:jobs:dead` — the dead-letter stream: jobs handed out `max_deliveries` times
  without ever being acknowledged, kept (capped) for operators.
- `{prefix}:jobs:seq` — a counter that numbers arrivals (`seq`), for FIFO across streams.

Entries hold `job_id`, `kind`, `priority`, `prior` (hand-outs before this entry) and `seq`. A
delivery's attempt is `prior` + the entry's delivery count. Acknowledged entries are deleted
(`XACK` + `XDEL`), so a stream holds only waiting and in-flight jobs and never grows.

Taking a job is a Lua script (atomic, one round trip): across the streams it may read, it
finds the oldest undelivered entry of the highest priority and reads exactly that one with
`XREADGROUP`. A plain blocking `XREADGROUP` over several streams cannot promise that (it may
return one entry per stream, and picks no order). When nothing is waiting, the consumer
blocks on `XREAD` from each stream's newest id (it consumes nothing) and tries again when it
wakes; the script returns those ids from the same atomic look, so nothing added in between
is missed.

Reclaiming is a script too: `XAUTOCLAIM` takes entries idle longer than `idle_s`, `XPENDING`
gives how often each was delivered, and each is re-added as a new entry (attempt counted on)
or moved to the dead-letter stream, then acknowledged and deleted, all atomically. The
consumer that held it finds out from `touch` (False) and its `ack` does nothing.

Needs Redis 6.2 or newer. The scripts touch several keys at once, so on Redis Cluster the
prefix must be a hash tag (`{escenario}`) to keep them in one slot.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from inference.queue import (
    DEFAULT_MAX_DELIVERIES,
    JOB_KINDS,
    PRIORITIES,
    Delivery,
    QueueClosed,
    QueueError,
    QueueUnavailable,
    check_kinds,
    check_max_deliveries,
    check_put,
)

_T = TypeVar("_T")

# Longest single XREAD block: a closed queue or a cancelled get is noticed within this.
_MAX_BLOCK_MS = 1000
_DEAD_LETTER_MAXLEN = 10_000
_RECLAIMER = "escenario-reclaimer"
_MIN_REDIS = (6, 2)

# KEYS: the candidate streams, interactive ones first. ARGV: group, consumer, how many of
# KEYS are interactive. Entry ids order one stream only (two streams may issue the same id
# in one millisecond), so arrival order across kinds is the `seq` field that `_PUT` numbers.
# Returns {key, id, field, value, ...} for the entry taken, or {"", newest id of each
# stream...} when nothing is waiting.
_TAKE = """
local group, consumer, split = ARGV[1], ARGV[2], tonumber(ARGV[3])
local function seq_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'seq' then return tonumber(fields[i + 1]) end
  end
  return 0
end
local function last_delivered(key)
  if redis.call('EXISTS', key) == 1 then
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', key)) do
      local fields = {}
      for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
      if fields['name'] == group then return fields['last-delivered-id'] end
    end
  end
  -- The stream or its group was deleted behind our back: the client recreates them.
  return nil
end
local tiers = {{1, split}, {split + 1, #KEYS}}
for _, tier in ipairs(tiers) do
  local best_key, best_seq = nil, nil
  for i = tier[1], tier[2] do
    local last = last_delivered(KEYS[i])
    if not last then return redis.error_reply('NOGROUP ' .. KEYS[i] .. ' has no group ' .. group) end
    local head = redis.call('XRANGE', KEYS[i], '(' .. last, '+', 'COUNT', 1)
    if #head > 0 then
      local seq = seq_of(head[1][2])
      if best_seq == nil or seq < best_seq then best_key, best_seq = KEYS[i], seq end
    end
  end
  if best_key then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', best_key, '>')
    local entry = read[1][2][1]
    local out = {best_key, entry[1]}
    for _, v in ipairs(entry[2]) do out[#out + 1] = v end
    return out
  end
end
local out = {''}
for i = 1, #KEYS do
  local newest = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  out[#out + 1] = (#newest > 0) and newest[1][1] or '0-0'
end
return out
"""

# KEYS: [stream, sequence counter]. ARGV: job_id, kind, priority.
_PUT = """
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], '*',
  'job_id', ARGV[1], 'kind', ARGV[2], 'priority', ARGV[3], 'prior', 0, 'seq', seq)
"""

# KEYS: [stream]. ARGV: group, consumer, id. 1 if the entry is still pending for consumer.
_OWNER_CHECK = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
return (#p > 0 and p[1][2] == ARGV[2]) and 1 or 0
"""

_TOUCH = (
    _OWNER_CHECK.replace("return", "local mine =")
    + """
if mine == 1 then
  -- JUSTID: resets the idle time without counting another delivery.
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
end
return mine
"""
)

# KEYS: [stream, sequence counter]. ARGV: group, consumer, id, prior for the new entry.
# Re-adds the entry (a new arrival, with the new `prior`) if the consumer still holds it;
# 1 if it did.
_REQUEUE = (
    _OWNER_CHECK.replace("return", "local mine =")
    + """
if mine == 0 then return 0 end
local entry = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #entry > 0 then
  local fields = entry[1][2]
  local seq = redis.call('INCR', KEYS[2])
  for i = 1, #fields, 2 do
    if fields[i] == 'prior' then fields[i + 1] = ARGV[4] end
    if fields[i] == 'seq' then fields[i + 1] = seq end
  end
  redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"""
)

# KEYS: the streams, then the dead-letter stream, then the sequence counter. ARGV: group,
# reclaimer consumer, min idle ms, max deliveries, dead-letter cap. Returns {key, id,
# attempt, dead (0/1), {field, value, ...}} per entry taken back.
_RECLAIM = """
local group, reclaimer, idle, max_deliveries = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local dead_key, seq_key = KEYS[#KEYS - 1], KEYS[#KEYS]
local out = {}
for i = 1, #KEYS - 2 do
  local key = KEYS[i]
  local cursor = '0-0'
  repeat
    local claimed = redis.call('XAUTOCLAIM', key, group, reclaimer, idle, cursor, 'COUNT', 100)
    cursor = claimed[1]
    for _, entry in ipairs(claimed[2]) do
      if entry then
        local id, fields = entry[1], entry[2]
        -- XAUTOCLAIM counted one more delivery (to the reclaimer); the lost ones are the rest.
        local pending = redis.call('XPENDING', key, group, id, id, 1)
        local delivered = tonumber(pending[1][4]) - 1
        local prior = 0
        for f = 1, #fields, 2 do
          if fields[f] == 'prior' then prior = tonumber(fields[f + 1]) end
        end
        local attempt = prior + delivered
        local dead = attempt >= max_deliveries
        local again = {}
        local seq = redis.call('INCR', seq_key)
        for f = 1, #fields, 2 do
          local value = fields[f + 1]
          if fields[f] == 'prior' then value = tostring(attempt) end
          if fields[f] == 'seq' then value = tostring(seq) end
          again[#again + 1] = fields[f]
          again[#again + 1] = value
        end
        if dead then
          again[#again + 1] = 'attempts'
          again[#again + 1] = tostring(attempt)
          redis.call('XADD', dead_key, 'MAXLEN', '~', ARGV[5], '*', unpack(again))
        else
          redis.call('XADD', key, '*', unpack(again))
        end
        redis.call('XACK', key, group, id)
        redis.call('XDEL', key, id)
        out[#out + 1] = {key, id, attempt, dead and 1 or 0, fields}
      end
    end
  until cursor == '0-0'
end
return out
"""


class RedisQueue:
    """The Redis Streams `JobQueue`. No I/O until the first call (`ping()` checks early)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "escenario",
        group: str = "workers",
        kinds: Collection[str] = JOB_KINDS,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"a Redis URL must start with redis://, rediss:// or unix://, got {url!r}")
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"the Redis key prefix must be non-empty and without spaces, got {prefix!r}")
        self.prefix = prefix
        self.group = group
        self.kinds = frozenset(kinds)
        self.max_deliveries = check_max_deliveries(max_deliveries)
        self.dead_letter_key = f"{prefix}:jobs:dead"
        self._seq_key = f"{prefix}:jobs:seq"
        self._where = _redact(url)
        self._redis: Any = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=connect_timeout_s
        )
        self._put = self._redis.register_script(_PUT)
        self._take = self._redis.register_script(_TAKE)
        self._touch = self._redis.register_script(_TOUCH)
        self._requeue = self._redis.register_script(_REQUEUE)
        self._reclaim = self._redis.register_script(_RECLAIM)
        self._ready = False
        self._closed = False

    def stream(self, priority: str, kind: str) -> str:
        return f"{self.prefix}:jobs:{priority}:{kind}"

    def _streams(self, kinds: Sequence[str]) -> list[str]:
        return [self.stream(p, k) for p in PRIORITIES for k in kinds]

    async def ping(self) -> None:
        """Fail now rather than at the first job: `QueueUnavailable` if Redis is unreachable,
        `QueueError` if it is older than 6.2 (no `XAUTOCLAIM`, no exclusive `XRANGE`)."""
        info = await self._call(lambda: self._redis.info("server"))
        version = str(info.get("redis_version", "0"))
        if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < _MIN_REDIS:
            raise QueueError(f"Redis at {self._where} is version {version}; the job queue needs 6.2 or newer")

    async def _ensure_groups(self, *, again: bool = False) -> None:
        if self._ready and not again:
            return
        for key in self._streams(sorted(self.kinds)):
            try:
                # From id 0, not $: jobs put before the first worker ever started count too.
                await self._redis.xgroup_create(key, self.group, id="0", mkstream=True)
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

    async def _call(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run one Redis operation with the groups in place and errors made clear."""
        if self._closed:
            raise QueueClosed("the job queue is closed")
        try:
            await self._ensure_groups()
            try:
                return await operation()
            except redis_errors.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                # Someone deleted a stream (FLUSHDB, an operator): recreate and retry once.
                await self._ensure_groups(again=True)
                return await operation()
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            if self._closed:
                raise QueueClosed("the job queue is closed") from exc
            raise QueueUnavailable(f"Redis at {self._where} is unreachable: {exc}") from exc

    async def put(self, job_id: str, kind: str, *, priority: str = "interactive") -> None:
        check_put(job_id, kind, priority, self.kinds)
        keys = [self.stream(priority, kind), self._seq_key]
        await self._call(lambda: self._put(keys=keys, args=[job_id, kind, priority]))

    async def get(
        self, consumer: str, *, kinds: Collection[str] | None = None, timeout_s: float | None = None
    ) -> Delivery | None:
        if not consumer or "\n" in consumer:
            raise ValueError(f"a consumer name must be non-empty and on one line, got {consumer!r}")
        wanted = check_kinds(kinds, self.kinds)
        keys = self._streams(wanted)
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + max(0.0, timeout_s)
        while True:
            reply = await self._call(lambda: self._take(keys=keys, args=[self.group, consumer, len(wanted)]))
            if reply[0]:
                return _delivery(reply[0], reply[1], _pairs(reply[2:]), consumer)
            remaining_ms = _MAX_BLOCK_MS if deadline is None else (deadline - loop.time()) * 1000
            if remaining_ms <= 0:
                return None
            # block=0 would mean forever: at least 1 ms.
            block = max(1, min(_MAX_BLOCK_MS, int(remaining_ms)))
            newest = dict(zip(keys, reply[1:], strict=True))
            await self._call(functools.partial(self._redis.xread, newest, count=1, block=block))

    async def ack(self, delivery: Delivery) -> None:
        key, entry_id, _ = _parse_token(delivery.token)

        async def drop() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(key, self.group, entry_id)
                pipe.xdel(key, entry_id)
                await pipe.execute()

        await self._call(drop)

    async def nack(self, delivery: Delivery, *, requeue: bool) -> None:
        if not requeue:
            await self.ack(delivery)
            return
        key, entry_id, consumer = _parse_token(delivery.token)
        args: list[str | int] = [self.group, consumer, entry_id, delivery.attempt]
        await self._call(lambda: self._requeue(keys=[key, self._seq_key], args=args))

    async def touch(self, delivery: Delivery) -> bool:
        key, entry_id, consumer = _parse_token(delivery.token)
        mine = await self._call(lambda: self._touch(keys=[key], args=[self.group, consumer, entry_id]))
        return bool(int(mine))

    async def reclaim(self, *, idle_s: float) -> list[Delivery]:
        keys = [*self._streams(sorted(self.kinds)), self.dead_letter_key, self._seq_key]
        args: list[str | int] = [
            self.group,
            _RECLAIMER,
            max(0, int(idle_s * 1000)),
            self.max_deliveries,
            _DEAD_LETTER_MAXLEN,
        ]
        reply = await self._call(lambda: self._reclaim(keys=keys, args=args))
        taken: list[Delivery] = []
        for key, entry_id, attempt, dead, fields in reply:
            # As its consumer held it; the consumer's name is not kept (the token is spent).
            held = _delivery(key, entry_id, _pairs(fields), "")
            taken.append(
                Delivery(held.job_id, held.kind, held.priority, held.token, int(attempt), bool(dead))
            )
        return taken

    async def dead_letters(self, *, limit: int = 100) -> list[dict[str, str]]:
        """The newest dead-lettered jobs (for operators), newest first."""
        rows = await self._call(lambda: self._redis.xrevrange(self.dead_letter_key, count=limit))
        return [dict(fields) for _, fields in rows]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._redis.aclose()


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


def _delivery(key: str, entry_id: str, fields: dict[str, str], consumer: str) -> Delivery:
    prior = int(fields.get("prior", "0"))
    return Delivery(
        job_id=fields["job_id"],
        kind=fields["kind"],
        priority=fields["priority"],
        token=json.dumps([key, entry_id, consumer]),
        attempt=prior + 1,
    )


def _parse_token(token: str) -> tuple[str, str, str]:
    try:
        key, entry_id, consumer = json.loads(token)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a delivery token of a Redis queue: {token!r}") from exc
    return str(key), str(entry_id), str(consumer)


def _redact(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
