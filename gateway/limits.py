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

import asyncio
import contextlib
import hashlib
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from gateway.errors import RateLimited
from gateway.limit_view import KeyView, Usage
from gateway.redis_link import RedisLink, Sent
from gateway.settings import Limit, LimitsConfig

WINDOW_MS = 60_000
BUCKET_MS = 10_000  # tokens per minute are summed over six 10-second buckets
SLOT_TTL_MS = 900_000  # a concurrency slot left by a replica that died is freed after 15 minutes
DAY_MS = 86_400_000
ORPHANS_KEPT = 10_000  # slots to free once Redis is back; beyond that, the slots' TTL frees them
LIMITS_KEPT = 10_000  # keys whose merged limits are remembered

# The key's usage now, after expiring what left the windows: requests in the last minute, tokens in the
# last six 10-second buckets, requests in flight, spend today (KEYS: rpm zset, tpm hash, concurrency
# zset, spend hash; `now`, `bucket`, `day` set by the script).
_USAGE = """
local function usage()
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
  local tokens = 0
  for b = bucket - 5, bucket do tokens = tokens + tonumber(redis.call('HGET', KEYS[2], b) or '0') end
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  return redis.call('ZCARD', KEYS[1]), tokens, redis.call('ZCARD', KEYS[3]), redis.call('HGET', KEYS[4], day) or '0'
end
"""
_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bucket = math.floor(now / 10000)
"""

# KEYS: rpm zset, tpm hash, concurrency zset, spend hash.
# ARGV: rpm, tpm, concurrent, budget ('' = no limit), request id, day offset ms, record ('1': record the
# request whatever the verdict, as a replica admitted it on its own view already).
# Returns {which, retry_after_ms, then the usage with this request: rpm, tpm, concurrent, spent (a
# string)}: which is 'ok' or the limit that refused.
_ADMIT = _CLOCK + """
local day = math.floor((now + tonumber(ARGV[6])) / 86400000)
""" + _USAGE + """
local rpm, tpm, conc, spent = usage()
local which, retry = 'ok', 0
if ARGV[1] ~= '' and rpm >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  which, retry = 'rpm', tonumber(oldest[2]) + 60000 - now
elseif ARGV[2] ~= '' and tpm >= tonumber(ARGV[2]) then
  which, retry = 'tpm', (bucket + 1) * 10000 - now
elseif ARGV[3] ~= '' and conc >= tonumber(ARGV[3]) then
  which, retry = 'concurrent', 1000
elseif ARGV[4] ~= '' and tonumber(spent) >= tonumber(ARGV[4]) then
  which, retry = 'budget', (day + 1) * 86400000 - tonumber(ARGV[6]) - now
end
if which == 'ok' or ARGV[7] == '1' then
  if ARGV[1] ~= '' then
    redis.call('ZADD', KEYS[1], now, ARGV[5])
    redis.call('PEXPIRE', KEYS[1], 61000)
    rpm = rpm + 1
  end
  if ARGV[3] ~= '' then
    redis.call('ZADD', KEYS[3], now + 900000, ARGV[5])
    redis.call('PEXPIRE', KEYS[3], 901000)
    conc = conc + 1
  end
end
return {which, retry, rpm, tpm, conc, spent}
"""

# KEYS: rpm zset, tpm hash, concurrency zset, spend hash. ARGV: tokens, cost, request id, day offset ms.
# Returns the usage after it: {rpm, tpm, concurrent, spent (a string)}.
_SETTLE = _CLOCK + """
local day = math.floor((now + tonumber(ARGV[4])) / 86400000)
if tonumber(ARGV[1]) > 0 then
  redis.call('HINCRBY', KEYS[2], bucket, ARGV[1])
  redis.call('HDEL', KEYS[2], bucket - 6, bucket - 7, bucket - 8)
  redis.call('PEXPIRE', KEYS[2], 70000)
end
redis.call('ZREM', KEYS[3], ARGV[3])
if tonumber(ARGV[2]) > 0 then
  redis.call('HINCRBYFLOAT', KEYS[4], day, ARGV[2])
  redis.call('HDEL', KEYS[4], day - 2)
  redis.call('PEXPIRE', KEYS[4], 172800000)
end
""" + _USAGE + """
local rpm, tpm, conc, spent = usage()
return {rpm, tpm, conc, spent}
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
    def __init__(self, config: LimitsConfig, link: RedisLink, clock: Callable[[], float] = time.time,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.link = link
        self._local = LocalCounters(clock)
        self._offset_ms = config.day_utc_offset_hours * 3_600_000
        self._limits: dict[str, Limit | None] = {}
        self._views: dict[str, KeyView] = {}
        self._on_event = on_event or (lambda event: None)
        self._admit = link.script(_ADMIT) if link.configured else None
        self._settle = link.script(_SETTLE) if link.configured else None
        # Concurrency slots Redis may hold for requests that ended while it was failing: a settle that
        # did not get through, or an admit that timed out here but that a hung Redis still runs once it
        # resumes. Freed (ZREM, harmless if absent) after the next call that gets through.
        self._orphans: deque[tuple[str, str]] = deque(maxlen=ORPHANS_KEPT)

    def limit_for(self, kid: str) -> Limit | None:
        """The key's own values over the defaults; None when nothing limits this key. Worked out once
        per key (the config does not change while the process runs)."""
        if kid in self._limits:
            return self._limits[kid]
        merged = self.config.default.model_dump()
        merged.update({k: v for k, v in (self.config.keys.get(kid) or Limit()).model_dump().items() if v is not None})
        limited = any(merged[k] is not None for k in ("rpm", "tpm", "concurrent", "budget_cny_per_day"))
        limit = Limit(**merged) if limited else None  # a priority alone limits nothing: Redis is not asked
        if len(self._limits) >= LIMITS_KEPT:
            self._limits.clear()
        self._limits[kid] = limit
        return limit

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

    def _view(self, kid: str) -> KeyView:
        view = self._views.get(kid)
        if view is None:
            if len(self._views) >= LIMITS_KEPT:
                self._views.clear()
            view = self._views[kid] = KeyView()
        return view

    def start(self, client_key: str | None, request_id: str) -> Admitting | None:
        """Begin this request's admission (None: nothing limits its key). Far from the key's limits, on
        a fresh view, it is admitted here and now, and recorded in Redis with the next write-behind
        flush; otherwise it is sent to Redis at once, and the caller scores the request while Redis
        answers, then awaits `admitted`."""
        if client_key is None:
            return None
        kid = key_id(client_key)
        limit = self.limit_for(kid)
        if limit is None:
            return None
        if self._admit is None:
            return Admitting(kid, limit, request_id, None, None)
        view = self._view(kid)
        here = self.link.up and view.far_from(limit, time.monotonic(), self.config.local_admission_below)
        args = ["" if v is None else v for v in (limit.rpm, limit.tpm, limit.concurrent, limit.budget_cny_per_day)]
        command = self._admit(self._keys(kid), [*args, request_id, self._offset_ms, "1" if here else "0"])
        sent = self.link.send([command], later=here)
        if not here:
            return Admitting(kid, limit, request_id, sent, None)
        view.admitted_since += 1
        self._on_event("view")
        self.link.keep(asyncio.ensure_future(self._recorded(kid, limit, request_id, sent)))
        return Admitting(kid, limit, request_id, None, Ticket(kid, request_id, limit, True))

    async def _recorded(self, kid: str, limit: Limit, request_id: str, sent: Sent) -> None:
        """Redis's answer to an admission made here: the view it brings, and whether Redis would have
        refused the request (the view was wrong: counted)."""
        answer = await sent.replies(None)
        if answer is None:
            if limit.concurrent is not None and not sent.skipped:
                self._orphans.append((kid, request_id))  # it may yet take a slot in Redis: free that later
            return
        self._view(kid).heard(Usage.of(answer[0][2:]), time.monotonic())
        if answer[0][0] != "ok":
            self._on_event("overshoot")

    async def admitted(self, admitting: Admitting | None) -> Ticket | None:
        """The verdict: a ticket to settle when the request ends, or RateLimited (429)."""
        if admitting is None:
            return None
        kid, limit, request_id, sent, decided = admitting
        if decided is not None:
            return decided
        answer = await sent.replies(None) if sent is not None else None
        shared = answer is not None
        if sent is not None and not sent.skipped and not shared and limit.concurrent is not None:
            self._orphans.append((kid, request_id))  # it may yet take a slot in Redis: free that later
        if answer is not None:
            which, retry_ms = str(answer[0][0]), float(answer[0][1])
            self._view(kid).heard(Usage.of(answer[0][2:]), time.monotonic())
            self._on_event("redis")
        else:
            which, retry_ms = self._local.admit(kid, limit, request_id, self._offset_ms)
            self._on_event("process")
        if which != "ok":
            raise RateLimited(f"Rate limit reached for this key ({_WHAT[which]}); try again in "
                              f"{max(1, math.ceil(retry_ms / 1000))} s.", limit=which, retry_after=retry_ms / 1000)
        return Ticket(kid, request_id, limit, shared)

    async def admit(self, client_key: str | None, request_id: str) -> Ticket | None:
        return await self.admitted(self.start(client_key, request_id))

    async def settle(self, ticket: Ticket, tokens: int, cost_cny: float) -> None:
        """Record what the request used and give its concurrency slot back: in Redis with the next
        write-behind flush (the answer brings the key's usage: a fresh view), or here."""
        args = [max(tokens, 0), max(cost_cny, 0.0), ticket.request_id, self._offset_ms]
        if ticket.shared and self._settle is not None:
            view = self._view(ticket.key_id)
            view.settled(max(tokens, 0), max(cost_cny, 0.0))
            answer = await self.link.run([self._settle(self._keys(ticket.key_id), args)], None, later=True)
            if answer is not None:
                view.heard(Usage.of(answer[0]), time.monotonic())
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
        if await self.link.run([("ZREM", self._keys(kid)[2], rid) for kid, rid in batch], None) is None:
            self._orphans.extend(batch)  # the next settle that gets through tries again


class Admitting(NamedTuple):
    """An admission on its way: sent to Redis (`sent`), decided here on the view (`decided`), or to be
    decided on this process's counters (neither: no Redis)."""

    key_id: str
    limit: Limit
    request_id: str
    sent: Sent | None
    decided: Ticket | None


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
