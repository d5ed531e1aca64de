"""The routing thresholds shared by every replica: a change through `PUT /admin/router` on any of them
is stored in Redis, published, and applied by all within a second; every change is kept in an audit
list (time, old, new, the admin key's id, the replica). Without Redis the state file does the same for
the worker processes of one host, and the audit stays in this process.

Each replica listens on the channel and also reads the current values once a second, so a missed
message (Redis restarted, a network blip) delays a change by a second at most. Precedence at start:
Redis, then the state file, then the YAML.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from gateway.redis_link import RedisLink
from gateway.router_state import ThresholdStore
from gateway.tasks import stop
from router.decide import Thresholds

log = logging.getLogger("qroute.router")
AUDIT_KEEP = 1000
SEED_IF_EMPTY = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class RouterSync:
    def __init__(self, store: ThresholdStore, link: RedisLink, replica: str,
                 on_change: Callable[[Thresholds], None],
                 on_model: Callable[[str], Awaitable[bool]] | None = None,
                 model_path: Callable[[], str] | None = None) -> None:
        self.store = store
        self.link = link
        self.replica = replica
        self._on_change = on_change
        self._on_model = on_model  # load and swap to a model path another replica switched to
        self._model_path = model_path or (lambda: "")
        self._refused_model = ""  # a shared model path this replica could not load (logged once)
        self._audit: deque[dict[str, Any]] = deque(maxlen=AUDIT_KEEP)
        self._task: asyncio.Task[None] | None = None
        self._pubsub: Any = None
        self._current_key = link.key("router", "current") if link.configured else ""
        self._audit_key = link.key("router", "audit") if link.configured else ""
        self._channel = link.key("router", "changed") if link.configured else ""
        # Held while a change is applied and shared, and while Redis's values are read and applied: a
        # read that overtakes this replica's own write would otherwise undo it here.
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        await self._pull()  # bounded: a Redis that does not answer leaves the local values in force
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        await stop(self._task)
        await self._drop_pubsub()

    async def change(self, new: Thresholds, admin_id: str) -> str:
        """Persist (state file, Redis), publish, record in the audit, then apply here. Returns where the
        change is shared: "redis", "state file", or "here only" (Redis is not answering)."""
        old = self.store.current
        entry = {"time": round(time.time(), 3), "kind": "thresholds", "old": {"t1": old.t1, "t2": old.t2},
                 "new": {"t1": new.t1, "t2": new.t2}, "admin": admin_id, "replica": self.replica}
        async with self.lock:
            return await self._record(entry, {}, new)

    async def changed_model(self, old: str, new: str, admin_id: str, kind: str,
                            thresholds: Thresholds | None) -> str:
        """A model swap (or rollback) made here, with the thresholds for its scale when given: shared in
        one write so no replica ever runs one model with the other's thresholds, and audited. The caller
        holds `lock` from switching its model until this returns."""
        entry: dict[str, Any] = {"time": round(time.time(), 3), "kind": kind, "old": old, "new": new,
                                 "admin": admin_id, "replica": self.replica}
        if thresholds is not None:
            entry["thresholds"] = {"t1": thresholds.t1, "t2": thresholds.t2}
        return await self._record(entry, {"model": new}, thresholds)

    async def _record(self, entry: dict[str, Any], current: dict[str, Any], thresholds: Thresholds | None) -> str:
        if thresholds is not None:
            self.store.update(thresholds, f"admin key {entry['admin']}")
            current = {**current, "t1": thresholds.t1, "t2": thresholds.t2}
        self._audit.appendleft(entry)
        shared = "state file"
        if self.link.configured:
            shared = "redis"
            if not await self._share(current, entry):
                shared = "here only"
                log.warning("router %s changed here but not shared: redis is not answering; other replicas keep "
                            "theirs until it is back and this change is made again", entry["kind"])
        if thresholds is not None:
            self._on_change(thresholds)
        return shared

    async def _share(self, current: dict[str, Any], entry: dict[str, Any]) -> bool:
        """One transaction: the current values, the audit entry, and the message every replica hears.
        False when Redis did not take it."""
        payload = orjson.dumps(entry).decode()

        async def share(client: Any) -> bool:
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(self._current_key, mapping=current)
                pipe.lpush(self._audit_key, payload)
                pipe.ltrim(self._audit_key, 0, AUDIT_KEEP - 1)
                pipe.publish(self._channel, payload)
                await pipe.execute()
            return True

        return await self.link.call(share, False)

    async def audit(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest changes, newest first: from Redis when it answers, else this process's."""
        if self.link.configured:
            async def read(client: Any) -> list[str]:
                return list(await client.lrange(self._audit_key, 0, limit - 1))

            rows: list[str] | None = await self.link.call(read, None)
            if rows is not None:
                return [orjson.loads(r) for r in rows]
        return list(self._audit)[:limit]

    async def _pull(self) -> None:
        async with self.lock:
            await self._pull_locked()

    async def _pull_locked(self) -> None:
        """Apply Redis's current model and thresholds (one snapshot), or the state file's thresholds
        when another worker changed them."""
        if self.link.configured:
            async def read(client: Any) -> dict[str, str]:
                return dict(await client.hgetall(self._current_key))

            answer: dict[str, str] | None = await self.link.call(read, None)
            if answer == {}:  # Redis answered, and holds nothing: a new or restarted (empty) Redis
                await self._reseed()
            current = answer or {}
            await self._follow_model(current.get("model"))
            if "t1" in current:
                try:
                    remote = Thresholds(float(current["t1"]), float(current["t2"]))
                except (KeyError, ValueError) as exc:
                    log.error("ignoring unreadable thresholds in redis: %s", exc)
                    return
                if remote != self.store.current:
                    self.store.apply(remote, "redis")
                    self._on_change(remote)
                return
        if self.store.reload_if_changed():
            self._on_change(self.store.current)

    async def _reseed(self) -> None:
        """Write this replica's thresholds and model to an empty Redis, unless another replica did first
        (one script: the first writer wins whole), so replicas that outlived a Redis restart, and those
        started after it, agree again instead of each keeping its own."""
        t = self.store.current
        values = ["t1", str(t.t1), "t2", str(t.t2), "model", self._model_path()]

        async def seed(client: Any) -> int:
            return int(await client.eval(SEED_IF_EMPTY, 1, self._current_key, *values))

        if await self.link.call(seed, 0):
            log.info("redis held no router settings: shared this replica's (t1 %s, t2 %s, model %s)",
                        t.t1, t.t2, self._model_path())

    async def _follow_model(self, shared: str | None) -> None:
        if not shared or shared == self._model_path() or self._on_model is None or shared == self._refused_model:
            return
        if not await self._on_model(shared):
            self._refused_model = shared  # the reason is logged by the loader; do not retry every second

    async def _follow(self) -> None:
        """Wake on a published change or after a second, whichever comes first, and pull."""
        while True:
            await self._wait_for_message(1.0)
            try:
                await self._pull()
            except Exception:  # a follower that dies would silently stop following changes
                log.exception("reading the shared router thresholds failed")

    async def _wait_for_message(self, timeout_s: float) -> None:
        if not self.link.configured or not self.link.up:
            await asyncio.sleep(timeout_s)
            return
        try:
            async with asyncio.timeout(timeout_s):
                if self._pubsub is None:
                    pubsub = self.link.client().pubsub(ignore_subscribe_messages=True)
                    await pubsub.subscribe(self._channel)
                    self._pubsub = pubsub
                await self._pubsub.get_message(timeout=timeout_s)
        except TimeoutError:
            return
        except Exception:  # a broken subscription is rebuilt on the next round; the poll covers the gap
            await self._drop_pubsub()
            await asyncio.sleep(timeout_s)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
