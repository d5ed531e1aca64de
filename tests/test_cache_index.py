"""The index of stored answers every replica keeps (gateway/cache_index.py), against a real
redis-server: an answer stored by one replica is known to another, a miss is decided without asking
Redis, answers stored before a replica started are listed, a lost subscription is rebuilt (and Redis is
asked meanwhile), and a full index forgets the soonest to expire."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest

from gateway.cache import CachedAnswer, ResponseCache, cache_key
from gateway.cache_index import CacheIndex
from gateway.redis_link import RedisLink
from gateway.settings import CacheConfig, RedisConfig
from tests.redis_server import RedisServer


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def replica(redis: RedisServer, misses: list[str] | None = None, **cache: object) -> ResponseCache:
    link = RedisLink(RedisConfig(url=redis.url, write_behind_ms=1))
    config = CacheConfig(enabled=True, ttl_s=60, **cache)  # type: ignore[arg-type]
    return ResponseCache(config, link, on_index_miss=(lambda: misses.append("miss")) if misses is not None else None)


def answer(text: str) -> CachedAnswer:
    return CachedAnswer({"choices": [{"message": {"content": text}}]}, "local", "vllm-local", "m", 0.001, 0.002)


def key(n: int) -> str:
    return cache_key("vllm-local", "m", False, f"digest-{n}")


def reads(redis: RedisServer) -> int:
    """GET and MGET calls Redis has run so far."""
    stats = redis.command("INFO", "commandstats").decode()
    return sum(int(n) for n in re.findall(r"cmdstat_m?get:calls=(\d+)", stats))


async def until(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result if isinstance(result, bool) else await result:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_a_stored_answer_is_known_everywhere_and_a_miss_costs_no_read(redis):
    misses: list[str] = []

    async def scenario() -> None:
        a, b = replica(redis), replica(redis, misses)
        for cache in (a, b):
            await cache.index.start()
        await until(lambda: a.index.complete and b.index.complete)
        before = reads(redis)
        assert await b.get(key(1)) is None  # stored nowhere: decided by the index
        assert reads(redis) == before and misses == ["miss"]
        await a.put(key(1), answer("from a"))
        await until(lambda: not b.index.absent(key(1)))  # a's announcement reached b
        hit = await b.get(key(1))
        assert hit is not None and hit.result["choices"][0]["message"]["content"] == "from a"
        assert reads(redis) == before + 1  # the hit was read from Redis
        prefetch = b.prefetch([key(1), key(2)], "digest")  # only the key someone stored is asked for
        assert (await prefetch.answer(key(2))) is None and misses == ["miss", "miss"]
        assert (await prefetch.answer(key(1))) is not None
        for cache in (a, b):
            await cache.index.close()
            await cache.link.close()

    asyncio.run(scenario())


def test_answers_stored_before_a_replica_started_are_listed(redis):
    async def scenario() -> None:
        early = replica(redis)
        for n in range(5):
            await early.put(key(n), answer(str(n)))
        late = replica(redis)
        assert not late.index.absent(key(99))  # not listed yet: not trusted
        await late.index.start()
        await until(lambda: late.index.complete)
        assert all(not late.index.absent(key(n)) for n in range(5))
        assert late.index.absent(key(99))
        for cache in (early, late):
            await cache.index.close()
            await cache.link.close()

    asyncio.run(scenario())


def test_a_lost_subscription_is_rebuilt_and_redis_is_asked_meanwhile(redis):
    async def scenario() -> None:
        a, b = replica(redis), replica(redis)
        await b.index.start()
        await until(lambda: b.index.complete)
        redis.command("CLIENT", "KILL", "TYPE", "pubsub")  # b hears nothing more on that connection
        await until(lambda: not b.index.complete)
        assert not b.index.absent(key(7))  # incomplete: every lookup asks Redis
        await a.put(key(7), answer("while b was deaf"))
        await until(lambda: b.index.complete)  # subscribed again and listed what is stored
        assert not b.index.absent(key(7))
        hit = await b.get(key(7))
        assert hit is not None
        for cache in (a, b):
            await cache.index.close()
            await cache.link.close()

    asyncio.run(scenario())


def test_a_full_index_forgets_the_soonest_to_expire():
    link = RedisLink(None)
    index = CacheIndex(link, ttl_s=60, max_keys=3)
    index.complete = True
    for n in range(5):
        index.stored(key(n))
    assert [index.absent(key(n)) for n in range(5)] == [True, True, False, False, False]


def test_an_expired_entry_is_a_miss():
    now = [0.0]
    index = CacheIndex(RedisLink(None), ttl_s=10, max_keys=100, clock=lambda: now[0])
    index.complete = True
    index.stored(key(1))
    assert not index.absent(key(1))
    now[0] = 10.5
    assert index.absent(key(1))
