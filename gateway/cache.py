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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.cache_index import CacheIndex
from gateway.redis_link import RedisLink, Sent
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


def request_digest(data: dict[str, Any], index_version: str | None) -> str:
    """What every route's key shares: the messages, every parameter that changes the answer, and the
    index version of a grounded request. Worked out once however many routes' keys are needed."""
    material = {"index": index_version, "messages": data.get("messages"),
                "params": {k: v for k, v in data.items() if k not in _IGNORED}}
    return hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


def cache_key(backend: str, model: str, thinking: bool, digest: str) -> str:
    """The key of one route's answer: the backend, its model and the thinking switch over the digest."""
    return hashlib.sha256(orjson.dumps([backend, model, thinking, digest])).hexdigest()


class Prefetch:
    """Cached answers asked for before the route is known (every route's key the request may take,
    less those the index knows are not stored), in the same write to Redis as the key's admission;
    `answer` gives the chosen route's."""

    def __init__(self, cache: ResponseCache, keys: list[str], digest: str, asked: list[str],
                 sent: Sent | None) -> None:
        self._cache = cache
        self.keys = keys
        self.digest = digest
        self._asked = asked
        self._sent = sent

    async def answer(self, key: str) -> CachedAnswer | None:
        if key not in self.keys:  # not a candidate (cannot happen: every route's key is): ask now
            self.abandon()
            return await self._cache.get(key)
        if not self._cache.link.configured:
            return self._cache.get_local(key)
        if key not in self._asked:  # the index knows no replica stored it
            self._cache.on_index_miss()
            return None
        if self._sent is None:  # abandoned
            return None
        replies = await self._sent.replies(None)
        raw = replies[self._asked.index(key)] if replies else None
        return CachedAnswer.loads(raw) if raw else None

    def abandon(self) -> None:
        """The request ended before it needed the answer."""
        if self._sent is not None:
            self._sent.abandon()
            self._sent = None


class ResponseCache:
    def __init__(self, config: CacheConfig, link: RedisLink,
                 on_index_miss: Callable[[], None] | None = None) -> None:
        self.config = config
        self.link = link
        self.index = CacheIndex(link, config.ttl_s, config.index_max_keys if config.enabled else 0)
        self.on_index_miss = on_index_miss or (lambda: None)
        self._local: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def _redis_key(self, key: str) -> str:
        return self.link.key("cache", key)

    def prefetch(self, keys: list[str], digest: str) -> Prefetch:
        """Ask for these keys now (a GET each, not an MGET: each key in its own Redis Cluster slot; sent
        with whatever else is sent in this `batch`), but for those the index knows are stored nowhere."""
        if not self.link.configured:
            return Prefetch(self, keys, digest, [], None)
        asked = [k for k in keys if not self.index.absent(k)]
        sent = self.link.send([("GET", self._redis_key(k)) for k in asked]) if asked else None
        return Prefetch(self, keys, digest, asked, sent)

    async def get(self, key: str) -> CachedAnswer | None:
        if self.link.configured:
            if self.index.absent(key):
                self.on_index_miss()
                return None
            replies = await self.link.run([("GET", self._redis_key(key))], None)
            return CachedAnswer.loads(replies[0]) if replies and replies[0] else None
        return self.get_local(key)

    def get_local(self, key: str) -> CachedAnswer | None:
        """The per-process cache used without Redis."""
        entry = self._local.get(key)
        if entry is None or entry[0] < time.monotonic():
            self._local.pop(key, None)
            return None
        self._local.move_to_end(key)
        return CachedAnswer.loads(entry[1])

    async def put(self, key: str, answer: CachedAnswer) -> None:
        """Store the answer (with the write-behind flush) and announce it to the other replicas' indexes."""
        raw = answer.dumps()
        if self.link.configured:
            self.index.stored(key)
            await self.link.run([("SET", self._redis_key(key), raw, "PX", int(self.config.ttl_s * 1000)),
                                 ("PUBLISH", self.index.channel, key)], None, later=True)
            return
        self._local[key] = (time.monotonic() + self.config.ttl_s, raw)
        self._local.move_to_end(key)
        while len(self._local) > self.config.max_entries:
            self._local.popitem(last=False)
