"""Per client key limits: requests and tokens per minute, requests at once, and a daily budget in
CNY, enforced atomically across replicas.

Keys are known only by their id, the first 12 hex digits of their SHA-256: the config names ids, Redis
stores ids, nothing stores a key. With Redis, one Lua script admits a request (every limit checked and
recorded at once, so two replicas can never both take the last slot) and one settles it (tokens,
spend, the concurrency slot back). All keys of one client key share a `{key id}` hash tag, so the
scripts work on Redis Cluster, and time comes from Redis itself, so replicas' clocks need not agree.
Without Redis (not configured, or failing) the same rules run on per-process counters.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import RateLimited
from gateway.redis_link import RedisLink
from gateway.settings import Limit, LimitsConfig

WINDOW_MS = 60_000
BUCKET_MS = 10_000  # tokens per minute are summed over six 10-second buckets
SLOT_TTL_MS = 900_000  # a concurrency slot left by a replica that died is freed after 15 minutes
DAY_MS = 86_400_000
ORPHANS_KEPT = 10_000  # slots to free once Redis is back; beyond that, the slots' TTL frees them

# KEYS: rpm zset, tpm hash, concurrency zset, spend hash.
# ARGV: rpm, tpm, concurrent, budget ('' = no limit), request id, day offset ms.
# Returns {which, retry_after_ms}: which is 'ok' or the limit that refused.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bucket = math.floor(now / 10000)
local day = math.floor((now + tonumber(ARGV[6])) / 86400000)
if ARGV[1] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {'rpm', tonumber(oldest[2]) + 60000 - now}
  end
end
if ARGV[2] ~= '' then
  local used = 0
  for b = bucket - 5, bucket do used = used + tonumber(redis.call('HGET', KEYS[2], b) or '0') end
  if used >= tonumber(ARGV[2]) then return {'tpm', (bucket + 1) * 10000 - now} end
end
if ARGV[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[3]) then return {'concurrent', 1000} end
end
if ARGV[4] ~= '' then
  local spent = tonumber(redis.call('HGET', KEYS[4], day) or '0')
  if spent >= tonumber(ARGV[4]) then return {'budget', (day + 1) * 86400000 - tonumber(ARGV[6]) - now} end
end
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], 61000)
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[3], now + 900000, ARGV[5])
  redis.call('PEXPIRE', KEYS[3], 901000)
end
return {'ok', 0}
"""

# KEYS: tpm hash, concurrency zset, spend hash. ARGV: tokens, cost, request id, day offset ms.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bucket = math.floor(now / 10000)
local day = math.floor((now + tonumber(ARGV[4])) / 86400000)
if tonumber(ARGV[1]) > 0 then
  redis.call('HINCRBY', KEYS[1], bucket, ARGV[1])
  redis.call('HDEL', KEYS[1], bucket - 6, bucket - 7, bucket - 8)
  redis.call('PEXPIRE', KEYS[1], 70000)
end
redis.call('ZREM', KEYS[2], ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBYFLOAT', KEYS[3], day, ARGV[2])
  redis.call('HDEL', KEYS[3], day - 2)
  redis.call('PEXPIRE', KEYS[3], 172800000)
end
return 1
"""


def key_id(key: str) -> str:
    """How a client key is named in the config, in Redis and in logs: never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Ticket:
    """An admitted request: settle it once, when it ends."""

    key_id: str
    request_id: str
    limit: Limit
    shared: bool  # counted in Redis (else in this process)


_WHAT = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrent": "requests at once",
         "budget": "daily budget (CNY)"}


class Limiter:
    def __init__(self, config: LimitsConfig, link: RedisLink, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.link = link
        self._local = LocalCounters(clock)
        self._offset_ms = config.day_utc_offset_hours * 3_600_000
        self._scripts: dict[str, Any] = {}
        # Concurrency slots Redis may hold for requests that ended while it was failing: a settle that
        # did not get through, or an admit that timed out here but that a hung Redis still runs once it
        # resumes. Freed (ZREM, harmless if absent) after the next call that gets through.
        self._orphans: deque[tuple[str, str]] = deque(maxlen=ORPHANS_KEPT)

    def limit_for(self, kid: str) -> Limit | None:
        """The key's own values over the defaults; None when nothing limits this key."""
        merged = self.config.default.model_dump()
        merged.update({k: v for k, v in (self.config.keys.get(kid) or Limit()).model_dump().items() if v is not None})
        limit = Limit(**merged)
        return limit if any(v is not None for v in merged.values()) else None

    def priority_for(self, client_key: str | None, header: str | None) -> int:
        """A request's place in admission queues: the key's configured priority, or the
        `x-qroute-priority` header when the key is trusted to set it."""
        kid = key_id(client_key) if client_key is not None else None
        if header is not None and kid is not None and kid in self.config.priority_header_keys:
            with contextlib.suppress(ValueError):
                return max(-100, min(100, int(header)))
        limit = self.config.keys.get(kid) if kid is not None else None
        value = limit.priority if limit is not None and limit.priority is not None else self.config.default.priority
        return value or 0

    def _keys(self, kid: str) -> list[str]:
        tag = "{" + kid + "}"
        return [self.link.key("lim", tag, name) for name in ("rpm", "tpm", "conc", "spend")]

    def _script(self, client: Any, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = client.register_script(source)
        return self._scripts[name]

    async def admit(self, client_key: str | None, request_id: str) -> Ticket | None:
        if client_key is None:
            return None
        kid = key_id(client_key)
        limit = self.limit_for(kid)
        if limit is None:
            return None
        args = ["" if v is None else str(v) for v in (limit.rpm, limit.tpm, limit.concurrent, limit.budget_cny_per_day)]

        sent = False

        async def admit_shared(client: Any) -> list[Any]:
            nonlocal sent
            sent = True
            script = self._script(client, "admit", _ADMIT)
            return list(await script(keys=self._keys(kid), args=[*args, request_id, self._offset_ms], client=client))

        answer = await self.link.call(admit_shared, None) if self.link.configured else None
        shared = answer is not None
        if sent and not shared and limit.concurrent is not None:
            self._orphans.append((kid, request_id))  # it may yet take a slot in Redis: free that later
        which, retry_ms = (str(answer[0]), float(answer[1])) if answer is not None else \
            self._local.admit(kid, limit, request_id, self._offset_ms)
        if which != "ok":
            raise RateLimited(f"Rate limit reached for this key ({_WHAT[which]}); try again in "
                              f"{max(1, math.ceil(retry_ms / 1000))} s.", limit=which, retry_after=retry_ms / 1000)
        return Ticket(kid, request_id, limit, shared)

    async def settle(self, ticket: Ticket, tokens: int, cost_cny: float) -> None:
        args = [max(tokens, 0), max(cost_cny, 0.0), ticket.request_id, self._offset_ms]
        if ticket.shared:
            keys = self._keys(ticket.key_id)

            async def settle_shared(client: Any) -> bool:
                script = self._script(client, "settle", _SETTLE)
                await script(keys=[keys[1], keys[2], keys[3]], args=args, client=client)
                return True

            if await self.link.call(settle_shared, False):
                await self._free_orphans()
                return
            if ticket.limit.concurrent is not None:
                self._orphans.append((ticket.key_id, ticket.request_id))
        self._local.settle(ticket.key_id, ticket.request_id, tokens, cost_cny, self._offset_ms)

    async def _free_orphans(self) -> None:
        """Free the slots of requests that ended while Redis was failing, now that it answers: only
        after a call got through, so a hung Redis has run what it had queued before it stopped."""
        if not self._orphans:
            return
        batch = [self._orphans.popleft() for _ in range(min(len(self._orphans), 500))]

        async def free(client: Any) -> bool:
            async with client.pipeline(transaction=False) as pipe:
                for kid, request_id in batch:
                    pipe.zrem(self._keys(kid)[2], request_id)
                await pipe.execute()
            return True

        if not await self.link.call(free, False):
            self._orphans.extend(batch)  # the next settle that gets through tries again


class LocalCounters:
    """The same rules on this process's own counters: without Redis, or while it is failing."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._requests: dict[str, deque[float]] = defaultdict(deque)
        self._tokens: dict[str, dict[int, int]] = defaultdict(dict)
        self._slots: dict[str, dict[str, float]] = defaultdict(dict)
        self._spend: dict[str, dict[int, float]] = defaultdict(dict)

    def _now_ms(self) -> float:
        return self._clock() * 1000

    def admit(self, kid: str, limit: Limit, request_id: str, offset_ms: int) -> tuple[str, float]:
        now = self._now_ms()
        bucket, day = int(now // BUCKET_MS), int((now + offset_ms) // DAY_MS)
        recent = self._requests[kid]
        while recent and recent[0] <= now - WINDOW_MS:
            recent.popleft()
        if limit.rpm is not None and len(recent) >= limit.rpm:
            return "rpm", recent[0] + WINDOW_MS - now
        tokens = self._tokens[kid]
        if limit.tpm is not None and sum(tokens.get(b, 0) for b in range(bucket - 5, bucket + 1)) >= limit.tpm:
            return "tpm", (bucket + 1) * BUCKET_MS - now
        slots = self._slots[kid]
        for rid in [r for r, expiry in slots.items() if expiry <= now]:
            del slots[rid]
        if limit.concurrent is not None and len(slots) >= limit.concurrent:
            return "concurrent", 1000.0
        if limit.budget_cny_per_day is not None and self._spend[kid].get(day, 0.0) >= limit.budget_cny_per_day:
            return "budget", (day + 1) * DAY_MS - offset_ms - now
        if limit.rpm is not None:
            recent.append(now)
        if limit.concurrent is not None:
            slots[request_id] = now + SLOT_TTL_MS
        return "ok", 0.0

    def settle(self, kid: str, request_id: str, tokens: int, cost: float, offset_ms: int) -> None:
        now = self._now_ms()
        bucket, day = int(now // BUCKET_MS), int((now + offset_ms) // DAY_MS)
        counts = self._tokens[kid]
        counts[bucket] = counts.get(bucket, 0) + max(tokens, 0)
        for old in [b for b in counts if b < bucket - 5]:
            del counts[old]
        self._slots[kid].pop(request_id, None)
        spend = self._spend[kid]
        spend[day] = spend.get(day, 0.0) + max(cost, 0.0)
        for old in [d for d in spend if d < day - 1]:
            del spend[old]
