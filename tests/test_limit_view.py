"""Admissions a replica makes on its own view of a key's usage (gateway/limit_view.py), and what keeps
them exact: the rules on their own, then two limiters (two replicas) sharing a real redis-server."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator

import pytest

from gateway.errors import RateLimited
from gateway.limit_view import MIN_ROOM, VIEW_FRESH_S, KeyView, Usage
from gateway.limits import Limiter, Ticket, key_id
from gateway.redis_link import RedisLink
from gateway.settings import Limit, LimitsConfig, RedisConfig
from tests.redis_server import RedisServer

KEY = "sk-view-test"


def view(rpm: int = 0, tpm: int = 0, concurrent: int = 0, spent: float = 0.0, at: float = 100.0) -> KeyView:
    v = KeyView()
    v.heard(Usage(rpm, tpm, concurrent, spent), at)
    return v


def test_far_from_every_limit_on_a_fresh_view_only():
    limit = Limit(rpm=100, concurrent=40)
    assert view(rpm=40, concurrent=10).far_from(limit, 100.5, 0.5)  # room for 10 more under half of each
    assert not view(rpm=41).far_from(limit, 100.5, 0.5)
    assert not view(concurrent=11).far_from(limit, 100.5, 0.5)
    assert not view().far_from(limit, 100.0 + VIEW_FRESH_S + 0.01, 0.5)  # stale
    assert not view().far_from(limit, 100.5, 0.0)  # turned off
    assert not KeyView().far_from(limit, 100.5, 0.5)  # never heard from Redis


def test_small_limits_always_wait_for_redis():
    """Under MIN_ROOM requests of room, every admission is Redis's: a limit of 5 is exact at any share."""
    assert not view().far_from(Limit(rpm=2 * MIN_ROOM - 1), 100.5, 0.5)
    assert view().far_from(Limit(rpm=2 * MIN_ROOM), 100.5, 0.5)


def test_admissions_made_here_count_until_redis_answers_again():
    v = view(rpm=30)
    limit = Limit(rpm=100)
    for _ in range(11):
        assert v.far_from(limit, 100.5, 0.5)
        v.admitted_since += 1
    assert not v.far_from(limit, 100.5, 0.5)  # 30 + 11 admitted here: no room for 10 more under half
    v.heard(Usage(31, 0, 0, 0.0), 100.6)  # Redis's own count replaces the estimate
    assert v.far_from(limit, 100.7, 0.5)


def test_tokens_and_budget_need_the_size_of_a_request_first():
    limit = Limit(tpm=100_000, budget_cny_per_day=10.0)
    v = view(tpm=1_000, spent=0.5)
    assert not v.far_from(limit, 100.5, 0.5)  # no request settled here yet: its size is unknown
    v.settled(2_000, 0.01)
    assert v.far_from(limit, 100.5, 0.5)
    v.settled(5_000, 0.01)  # no room for 10 more of the largest size under half: 1,000 + 50,000 > 50,000
    assert not v.far_from(limit, 100.5, 0.5)
    budget = Limit(budget_cny_per_day=10.0)
    spending = view(spent=4.0)
    spending.settled(100, 0.1)
    assert spending.far_from(budget, 100.5, 0.5)  # 4.0 + 10 x 0.1 = 5.0
    spending.settled(100, 0.2)
    assert not spending.far_from(budget, 100.5, 0.5)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def limiter(redis: RedisServer, limit: Limit, events: Counter[str], below: float = 0.5) -> Limiter:
    config = LimitsConfig(keys={key_id(KEY): limit}, local_admission_below=below)
    link = RedisLink(RedisConfig(url=redis.url, write_behind_ms=5))
    return Limiter(config, link, on_event=lambda event: events.update([event]))


def held(redis: RedisServer, name: str) -> int:
    answer = redis.command("ZCARD", f"qroute:lim:{{{key_id(KEY)}}}:{name}")
    match = re.match(rb":(\d+)", answer)
    assert match, answer
    return int(match.group(1))


def test_two_replicas_admit_exactly_the_limit_however_their_views_lag(redis):
    """Bursts on two replicas, each admitting on its own view while far from the limit: together they
    admit exactly rpm requests, never one more, and Redis counted every one."""
    events: Counter[str] = Counter()
    a, b = limiter(redis, Limit(rpm=60), events), limiter(redis, Limit(rpm=60), events)

    async def scenario() -> tuple[int, int]:
        admitted = refused = 0
        for round_ in range(10):
            for replica in (a, b):
                for i in range(4):  # a burst: no wait for Redis between its admissions
                    try:
                        ticket = await replica.admit(KEY, f"r{round_}-{id(replica)}-{i}")
                        assert isinstance(ticket, Ticket)
                        admitted += 1
                    except RateLimited as exc:
                        assert exc.limit == "rpm"
                        refused += 1
            await asyncio.sleep(0.02)  # the write-behind flushes; answers bring fresh views
        for replica in (a, b):
            await replica.link.close()
        return admitted, refused

    admitted, refused = asyncio.run(scenario())
    assert (admitted, refused) == (60, 20)
    assert held(redis, "rpm") == 60  # each one recorded in Redis
    assert events["view"] > 0 and events["redis"] > 0  # far from the limit on the view; near it, Redis's
    assert events["overshoot"] == 0


def test_an_admission_redis_would_have_refused_is_counted(redis):
    """Another client uses the rest of the limit behind this replica's back: its next admission on the
    (still fresh) view goes through, Redis records it anyway, and the overshoot is counted."""
    events: Counter[str] = Counter()
    replica = limiter(redis, Limit(rpm=100), events)

    async def scenario() -> None:
        await replica.admit(KEY, "first")  # Redis's verdict: a view with 1 of 100 used
        for i in range(99):
            redis.command("ZADD", f"qroute:lim:{{{key_id(KEY)}}}:rpm", "1" + "0" * 15, f"other-{i}")
        await replica.admit(KEY, "second")  # on the view
        await asyncio.sleep(0.05)
        with pytest.raises(RateLimited):  # the answer brought the true count: Redis decides again
            await replica.admit(KEY, "third")
        await replica.link.close()

    asyncio.run(scenario())
    assert events["view"] == 1 and events["overshoot"] == 1
    assert held(redis, "rpm") == 101  # the second was recorded: counts stay true


def test_a_concurrency_slot_taken_on_the_view_is_given_back(redis):
    events: Counter[str] = Counter()
    replica = limiter(redis, Limit(concurrent=100), events)

    async def scenario() -> None:
        tickets = [await replica.admit(KEY, f"r{i}") for i in range(30)]
        await asyncio.sleep(0.05)
        assert held(redis, "conc") == 30
        for ticket in tickets:
            assert ticket is not None
            await replica.settle(ticket, 10, 0.0)
        assert held(redis, "conc") == 0
        await replica.link.close()

    asyncio.run(scenario())
    assert events["view"] > 0


def test_without_local_admission_every_request_waits_for_redis(redis):
    events: Counter[str] = Counter()
    replica = limiter(redis, Limit(rpm=10_000), events, below=0.0)

    async def scenario() -> None:
        for i in range(20):
            await replica.admit(KEY, f"r{i}")
        await replica.link.close()

    asyncio.run(scenario())
    assert events == Counter(redis=20)
