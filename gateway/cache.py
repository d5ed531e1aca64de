"""Exact-match answers for deterministic requests: not streamed, and temperature 0 or a seed.

The key is a SHA-256 over everything that changes the answer: the route's backend and model, the
effective thinking switch, the messages, tools, response format and every sampling parameter, and
the retrieval index's version when the request is grounded. Entries live in Redis (shared by every
replica) with a TTL, or in a bounded per-process LRU without Redis. A request opts out with
`"cache": {"no-cache": true}` (do not read) or `{"no-store": true}` (do not write) in the body, or
the same words in a `Cache-Control` header. A hit costs nothing and never reaches an upstream.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.redis_link import RedisLink
from gateway.settings import CacheConfig

# Fields that do not change the answer (or are the gateway's own and handled apart).
_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "cache", "store", "model", "messages",
                      "enable_thinking", "reasoning_effort", "chat_template_kwargs"})


@dataclass(frozen=True)
class CachePolicy:
    read: bool
    write: bool


@dataclass(frozen=True)
class CachedAnswer:
    result: dict[str, Any]
    route: str
    backend: str
    model: str
    cost_cny: float | None
    cloud_equivalent_cny: float | None

    def dumps(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def loads(cls, raw: bytes | str) -> CachedAnswer:
        return cls(**orjson.loads(raw))


def policy_for(config: CacheConfig, data: dict[str, Any], stream: bool,
               cache_control: str | None) -> CachePolicy | None:
    """None when this request is not cached at all: cache off, streamed, or not deterministic."""
    if not config.enabled or stream:
        return None
    if data.get("temperature") != 0 and data.get("seed") is None:
        return None
    given = data.get("cache")
    options: dict[str, Any] = given if isinstance(given, dict) else {}
    header = (cache_control or "").lower()
    no_cache = bool(options.get("no-cache")) or "no-cache" in header
    no_store = bool(options.get("no-store")) or "no-store" in header
    return CachePolicy(read=not no_cache, write=not no_store)


def cache_key(backend: str, model: str, thinking: bool, data: dict[str, Any], index_version: str | None) -> str:
    material = {
        "backend": backend, "model": model, "thinking": thinking, "index": index_version,
        "messages": data.get("messages"),
        "params": {k: v for k, v in data.items() if k not in _IGNORED},
    }
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


class ResponseCache:
    def __init__(self, config: CacheConfig, link: RedisLink) -> None:
        self.config = config
        self.link = link
        self._local: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _redis_key(self, key: str) -> str:
        return self.link.key("cache", key)

    async def get(self, key: str) -> CachedAnswer | None:
        if self.link.configured:
            async def read(client: Any) -> str | None:
                value: str | None = await client.get(self._redis_key(key))
                return value

            raw = await self.link.call(read, None)
            return CachedAnswer.loads(raw) if raw else None
        entry = self._local.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._local.pop(key, None)
            return None
        self._local.move_to_end(key)
        return CachedAnswer.loads(entry[1])

    async def put(self, key: str, answer: CachedAnswer) -> None:
        raw = answer.dumps()
        if self.link.configured:
            async def write(client: Any) -> bool:
                await client.set(self._redis_key(key), raw, px=int(self.config.ttl_s * 1000))
                return True

            await self.link.call(write, False)
            return
        self._local[key] = (time.monotonic() + self.config.ttl_s, raw)
        self._local.move_to_end(key)
        while len(self._local) > self.config.max_entries:
            self._local.popitem(last=False)
