"""Which answers the shared cache holds, known on every replica, so that a miss costs no round trip to
Redis.

Every replica announces each answer it stores (a PUBLISH in the same write as the SET) and listens to
the others' announcements. After subscribing it lists the answers already stored (SCAN) and only then
trusts the index: a key the index does not hold is a miss, decided here. A key it holds is still read
from Redis, so the index can cost a hit (an announcement lost while the subscription was down, an entry
evicted from a full index), never serve a wrong answer. Until the index is complete (starting, after a
lost subscription, Redis restarted) every lookup asks Redis, as without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway.redis_link import RedisLink
from gateway.tasks import stop

log = logging.getLogger("qroute.cache")
QUIET_S = 2.0  # no message for this long: ping the subscription; nothing back for as long again: rebuild
SCAN_COUNT = 1000


def _short(key: str) -> int:
    """An index entry: the first 64 bits of the SHA-256 key (a collision costs a round trip, no more)."""
    return int(key[:16], 16)


class CacheIndex:
    def __init__(self, link: RedisLink, ttl_s: float, max_keys: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._clock = clock
        self._expiry: OrderedDict[int, float] = OrderedDict()  # oldest first (one TTL for all: soonest to expire)
        self.complete = False
        self.channel = link.key("cache", "stored") if link.configured else ""
        self._pattern = link.key("cache", "*") if link.configured else ""
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.link.configured and self.max_keys > 0

    def absent(self, key: str) -> bool:
        """True when the index is complete and holds no live entry for `key`: a miss, decided here."""
        if not self.complete:
            return False
        expiry = self._expiry.get(_short(key))
        return expiry is None or expiry < self._clock()

    def stored(self, key: str) -> None:
        """An answer stored under `key` (here, or announced by another replica)."""
        short = _short(key)
        self._expiry.pop(short, None)
        self._expiry[short] = self._clock() + self.ttl_s
        while len(self._expiry) > self.max_keys:
            self._expiry.popitem(last=False)  # the soonest to expire: at worst a hit becomes a miss

    async def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        await stop(self._task)

    async def _follow(self) -> None:
        """Subscribe, list what is stored, then follow the announcements; start again whenever the
        subscription breaks or goes silent."""
        while True:
            pubsub: Any = None
            try:
                if not self.link.up:
                    await asyncio.sleep(QUIET_S)
                    continue
                pubsub = self.link.client().pubsub(ignore_subscribe_messages=True)
                async with asyncio.timeout(QUIET_S):
                    await pubsub.subscribe(self.channel)
                if await self._scan():
                    self.complete = True
                    await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken subscription: rebuilt, and every lookup asks Redis meanwhile
                log.debug("cache index subscription lost: %s: %s", type(exc).__name__, exc)
            finally:
                self.complete = False
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(QUIET_S / 4)

    async def _scan(self) -> bool:
        """Every answer stored now goes into a new index (its time left taken as a whole TTL)."""
        self._expiry.clear()
        cursor = 0
        while True:
            async def step(client: Any, cursor: int = cursor) -> tuple[int, list[str]]:
                next_cursor, keys = await client.scan(cursor, match=self._pattern, count=SCAN_COUNT)
                return int(next_cursor), list(keys)

            answer = await self.link.call(step, None)
            if answer is None:
                return False
            cursor, keys = answer
            for redis_key in keys:
                key = redis_key.rsplit(":", 1)[-1]
                if len(key) == 64:
                    self.stored(key)
            if cursor == 0:
                return True

    async def _listen(self, pubsub: Any) -> None:
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=QUIET_S)
            if message is None:
                if pinged or not self.link.up:
                    return  # silent after a ping (a connection that died without a word), or Redis is down
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message.get("type") == "message":
                data = message.get("data")
                if isinstance(data, str) and len(data) == 64:
                    self.stored(data)
