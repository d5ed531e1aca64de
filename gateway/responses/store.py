"""Stored responses, for `previous_response_id` and GET/DELETE /v1/responses/{id}.

A stored record is a JSON-able dict: `response` (the response object as sent), `input` (the whole
conversation the response answered, earlier turns included, so a chain never needs its ancestors)
and `owner` (a hash of the client key that made it: one client never reads another's). The store
is behind `ResponseStore` (async get/put/delete of such dicts) so a shared Redis store can replace
the in-process one, which each `--workers` process keeps for itself: with `redis` configured, every
replica and worker shares them (`SharedResponseStore`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from gateway.errors import InvalidRequest
from gateway.redis_link import RedisLink


class ResponseStore(Protocol):
    async def get(self, response_id: str) -> dict[str, Any] | None: ...

    async def put(self, response_id: str, record: dict[str, Any]) -> None: ...

    async def delete(self, response_id: str) -> bool: ...


class MemoryResponseStore:
    """An LRU of at most `max_items` records, each expiring `ttl_s` after it was put. Records are
    kept serialized: compact, and what a caller gets back is its own copy (as from Redis)."""

    def __init__(self, max_items: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.clock = clock
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, response_id: str) -> dict[str, Any] | None:
        entry = self._items.get(response_id)
        if entry is None:
            return None
        expires, raw = entry
        if expires <= self.clock():
            del self._items[response_id]
            return None
        self._items.move_to_end(response_id)
        record: dict[str, Any] = orjson.loads(raw)
        return record

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        self._items[response_id] = (self.clock() + self.ttl_s, orjson.dumps(record))
        self._items.move_to_end(response_id)
        self._evict()

    async def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

    def _evict(self) -> None:
        now = self.clock()
        while self._items:
            oldest_id, (expires, _) = next(iter(self._items.items()))
            if len(self._items) <= self.max_items and expires > now:
                return
            del self._items[oldest_id]


class SharedResponseStore:
    """Stored responses in Redis, so a chain may continue on any replica (or worker); each record
    is also kept in this process, which answers on its own while Redis is slow or gone."""

    def __init__(self, link: RedisLink, local: MemoryResponseStore) -> None:
        self.link = link
        self.local = local

    def _key(self, response_id: str) -> str:
        return self.link.key("responses", response_id)

    async def get(self, response_id: str) -> dict[str, Any] | None:
        async def read(client: Any) -> str | None:
            value: str | None = await client.get(self._key(response_id))
            return value

        raw = await self.link.call(read, None)
        if raw is not None:
            record: dict[str, Any] = orjson.loads(raw)
            return record
        return await self.local.get(response_id)

    async def put(self, response_id: str, record: dict[str, Any]) -> None:
        await self.local.put(response_id, record)
        raw = orjson.dumps(record)

        async def write(client: Any) -> bool:
            await client.set(self._key(response_id), raw, px=int(self.local.ttl_s * 1000))
            return True

        await self.link.call(write, False)

    async def delete(self, response_id: str) -> bool:
        async def remove(client: Any) -> bool:
            return bool(await client.delete(self._key(response_id)))

        shared = await self.link.call(remove, False)
        return await self.local.delete(response_id) or shared


def owner_of(client_key: str | None) -> str | None:
    """What a record keeps of the key that made it: never the key itself."""
    if client_key is None:
        return None
    return hashlib.sha256(client_key.encode()).hexdigest()[:32]


async def load_owned(store: ResponseStore, response_id: str, owner: str | None,
                     previous: bool = False) -> dict[str, Any]:
    """The stored record, or OpenAI's 404 (`previous_response_not_found` when chaining). Another
    client's response is not found either: its existence is not disclosed."""
    found = await store.get(response_id)
    if found is None or found.get("owner") != owner:
        if previous:
            raise InvalidRequest(f"Previous response with id '{response_id}' not found.",
                                 param="previous_response_id", code="previous_response_not_found", status=404)
        raise InvalidRequest(f"Response with id '{response_id}' not found.", code="response_not_found", status=404)
    return found
