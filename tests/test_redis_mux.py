"""The shared Redis connection of the request path (gateway/redis_mux.py) against a real redis-server:
replies reach their own callers however many are in flight, a batch and the write-behind queue each go
out in one write, a script Redis forgot is sent whole, a lost connection fails its callers and the next
command makes a new one; over TCP, a unix socket, with a password and a database, and over TLS."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.redis_mux import Multiplexed, RedisReplyError, Script
from tests.redis_server import RedisServer


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


class CountedWrites:
    """Counts the writes on the connection's transport (each is one system call)."""

    def __init__(self, mux: Multiplexed) -> None:
        protocol: Any = mux._protocol
        self.transport = protocol.transport
        self.writes: list[bytes] = []
        original = self.transport.write

        def write(data: bytes) -> None:
            self.writes.append(data)
            original(data)

        self.transport.write = write


def test_replies_reach_their_own_callers_however_many_are_in_flight(redis):
    async def scenario() -> None:
        mux = Multiplexed(redis.url)

        async def one(i: int) -> None:
            if i % 7 == 0:  # an error reply in the middle of the others fails only its own caller
                with pytest.raises(RedisReplyError):
                    await mux.execute([("INCR", "not-a-number")])
                return
            assert await mux.execute([("SET", f"k{i}", f"v{i}"), ("GET", f"k{i}")]) == ["OK", f"v{i}"]

        await mux.execute([("SET", "not-a-number", "x")])
        await asyncio.gather(*(one(i) for i in range(300)))
        await mux.close()

    asyncio.run(scenario())


def test_a_batch_goes_out_in_one_write_and_the_write_behind_queue_in_one_later(redis):
    async def scenario() -> None:
        mux = Multiplexed(redis.url, write_behind_s=0.05)
        await mux.connect()
        counted = CountedWrites(mux)
        with mux.batch():
            first = mux.send([("SET", "a", "1")])
            second = mux.send([("INCR", "a"), ("GET", "a")])
            assert counted.writes == []  # held until the batch ends
        assert len(counted.writes) == 1
        assert first is not None and second is not None
        assert [await f for f in (*first, *second)] == ["OK", 2, "2"]

        behind = [mux.send([("INCR", "b")], later=True) for _ in range(5)]
        now = mux.send([("GET", "b")])  # sent at once, ahead of the queue: its reply is its own
        assert now is not None and await now[0] is None
        assert len(counted.writes) == 2
        replies = [await futures[0] for futures in behind if futures is not None]
        assert replies == [1, 2, 3, 4, 5] and len(counted.writes) == 3  # the five in one write
        await mux.close()

    asyncio.run(scenario())


def test_a_script_redis_has_forgotten_is_sent_whole(redis):
    async def scenario() -> None:
        mux = Multiplexed(redis.url)
        script = mux.register("return tonumber(ARGV[1]) * 2")
        assert await mux.execute([script([], [21])]) == [42]
        await mux.execute([("SCRIPT", "FLUSH")])  # as a restarted, empty Redis
        assert await mux.execute([script([], [4]), ("PING",), script([], [5])]) == [8, "PONG", 10]
        unknown = Script("return 1")  # never registered: nothing to send again
        with pytest.raises(RedisReplyError, match="NOSCRIPT"):
            await mux.execute([unknown([], [])])
        await mux.close()

    asyncio.run(scenario())


def test_a_lost_connection_fails_its_callers_and_the_next_command_reconnects(redis):
    async def scenario() -> None:
        mux = Multiplexed(redis.url)
        await mux.execute([("PING",)])
        redis.pause()  # commands go out and nothing answers
        waiting = asyncio.ensure_future(mux.execute([("SET", "x", "1")]))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert redis.proc is not None
        redis.proc.kill()  # still stopped: it dies without answering, and the connection is reset
        redis.proc.wait(timeout=10)
        redis.proc = None
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(waiting, 5)
        redis.start()  # a new Redis on the same port
        assert await mux.execute([("PING",)]) == ["PONG"]
        await mux.close()

    asyncio.run(scenario())


def test_dropping_the_connection_fails_what_waits_and_the_next_command_reconnects(redis):
    async def scenario() -> None:
        mux = Multiplexed(redis.url)
        await mux.execute([("PING",)])
        redis.pause()
        try:
            futures = mux.send([("PING",)])
            assert futures is not None
            mux.drop()  # what the link does when Redis stops answering: it may have died without a word
            with pytest.raises(ConnectionError):
                await futures[0]
        finally:
            redis.resume()
        assert await mux.execute([("PING",)]) == ["PONG"]
        await mux.close()

    asyncio.run(scenario())


def test_a_unix_socket_a_password_and_a_database(tmp_path):
    secret = "mux-pw-3c1f"
    servers = [RedisServer(unix_socket=True).start(), RedisServer(password=secret).start()]
    try:
        async def scenario(url: str, password: str | None) -> list[Any]:
            mux = Multiplexed(url, password)
            replies = await mux.execute([("SET", "where", "db3"), ("PING",)])
            await mux.close()
            return replies

        unix = servers[0].url.replace("db=0", "db=3")
        assert asyncio.run(scenario(unix, None)) == ["OK", "PONG"]
        with_password = servers[1].url.replace("/0", "/3")
        assert asyncio.run(scenario(with_password, secret)) == ["OK", "PONG"]
        with pytest.raises(RedisReplyError, match=r"NOAUTH|WRONGPASS|AUTH"):
            asyncio.run(scenario(with_password, "wrong"))
        for server in servers:  # written to database 3, not 0
            assert server.command("SELECT", "3").startswith(b"+OK")
            raw = server.command("EXISTS", "where")
            assert re.match(rb":0", raw), raw  # a new connection starts in database 0, where it is not
    finally:
        for server in servers:
            server.stop()


def test_tls_with_the_certificate_checked():
    server = RedisServer(tls=True).start()
    try:
        async def scenario(url: str) -> list[Any]:
            mux = Multiplexed(url)
            replies = await mux.execute([("SET", "over", "tls"), ("GET", "over")])
            await mux.close()
            return replies

        assert server.url.startswith("rediss://")
        assert asyncio.run(scenario(server.url)) == ["OK", "tls"]
        unchecked = server.url.split("?")[0]  # the system's CAs do not know the test CA: refused
        with pytest.raises(OSError):
            asyncio.run(scenario(unchecked))
    finally:
        server.stop()


def test_a_caller_that_gives_up_is_no_verdict_on_redis(redis):
    """A request whose client leaves while its Redis call waits: neither a failure counted against
    Redis (clients leaving must not open its breaker) nor a probe slot kept."""
    from gateway.redis_link import RedisLink
    from gateway.settings import RedisConfig

    async def scenario() -> None:
        link = RedisLink(RedisConfig(url=redis.url, failure_threshold=1, reset_after_s=0.2))
        assert await link.run([("PING",)], None) == ["PONG"]
        redis.pause()
        try:
            waiting = [asyncio.ensure_future(link.run([("PING",)], None)) for _ in range(3)]
            await asyncio.sleep(0.01)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            assert link.breaker.state.value == "closed" and link.up
            assert await link.run([("PING",)], None) is None  # Redis hangs: the bound, a failure, open
            assert link.breaker.state.value == "open"
            await asyncio.sleep(0.25)
            probe = asyncio.ensure_future(link.run([("PING",)], None))  # the one probe half-open allows
            await asyncio.sleep(0.01)
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            assert not link.breaker.trial_in_flight  # given back: the next call may probe
        finally:
            redis.resume()
        assert await link.run([("PING",)], None) == ["PONG"]
        assert link.breaker.state.value == "closed"
        await link.close()

    asyncio.run(scenario())
