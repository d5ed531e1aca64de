"""The one way the gateway talks to Redis: every call bounded, a breaker around Redis, and a plain
answer of "no Redis" when it is slow, down or not configured, so no request ever waits on it longer
than the bound and start-up never needs it.

A failed call counts against the breaker; after `failure_threshold` in a row Redis is skipped until
`reset_after_s` has passed, then one probe call is let through, and only that probe closes it again.
When it opens, the calls still waiting give up at once. One log line says Redis went away and one that
it is back, never one per request; `qroute_redis_up` says the same to Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

from gateway.redis_mux import Command, Multiplexed, Script
from gateway.settings import RedisConfig, env_secret
from gateway.upstreams.breaker import BreakerState, CircuitBreaker, Pass

log = logging.getLogger("qroute.redis")
T = TypeVar("T")
GRACE_S = 0.002  # a bound that comes due late first lets the event loop read what has arrived


class RedisLink:
    def __init__(self, config: RedisConfig | None, on_state: Callable[[bool], None] | None = None,
                 replica: str = "") -> None:
        self.config = config
        self.replica = replica
        self._on_state = on_state
        self._client: Any = None
        self._bound = (config.timeout_ms / 1000) if config else 0.0
        self.breaker = CircuitBreaker(config.failure_threshold if config else 1,
                                      config.reset_after_s if config else 1.0, on_change=self._changed)
        self._up = True
        self._waiting: set[_Bound] = set()  # the bounds of the calls waiting on Redis now
        self._tasks: set[asyncio.Task[Any]] = set()  # replies nobody awaits, awaited here
        self._mux: Multiplexed | None = None
        if config is not None:
            self.client()  # import the library and make the client now: never inside a call's bound
            password = env_secret(config.password_env) if config.password_env else None
            self._mux = Multiplexed(config.url, password, write_behind_s=config.write_behind_ms / 1000,
                                    connect_timeout_s=max(1.0, 2 * self._bound))

    @property
    def configured(self) -> bool:
        return self.config is not None

    def key(self, *parts: str) -> str:
        """A key in this deployment's namespace; `{...}` parts are Redis Cluster hash tags."""
        assert self.config is not None
        return ":".join((self.config.prefix, *parts))

    def client(self) -> Any:
        """The client, made with the link (it connects on first use: start-up never connects): no
        retries of its own, every socket operation bounded."""
        if self._client is None:
            assert self.config is not None
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            password = env_secret(self.config.password_env) if self.config.password_env else None
            # The sockets' own timeouts, a backstop for direct users of the client: `call` stops its calls
            # at the bound, and one that comes due while the process stood still must find these unexpired.
            backstop = max(1.0, 2 * self._bound)
            self._client = Redis.from_url(self.config.url, password=password, socket_timeout=backstop,
                                          socket_connect_timeout=backstop, retry=Retry(NoBackoff(), 0),
                                          decode_responses=True, max_connections=256, **_lean_connections())
        return self._client

    async def call(self, op: Callable[[Any], Awaitable[T]], fallback: T) -> T:
        """`op(client)` within the bound, or `fallback` when Redis is off, open-breakered or failing."""
        if self.config is None:
            return fallback
        granted = self.breaker.enter()
        if granted is None:
            return fallback
        client = self.client()
        return await self._bounded(lambda: op(client), granted, self._deadline(), fallback)

    def send(self, commands: Sequence[Command], later: bool = False) -> Sent:
        """The request path's commands, on the shared connection and on the wire when this returns
        (once it is connected): the caller works on while Redis answers, then awaits `Sent.replies`,
        which is bounded from now. `later`: bookkeeping nobody waits for, written with the next
        write-behind flush (`redis.write_behind_ms`), many requests' in one write. Always await the
        replies (or `abandon` them): a probe's breaker slot is given back there."""
        granted = self.breaker.enter() if self.config is not None else None
        if granted is None:
            return Sent(self, commands, None, None, deadline=0.0)
        futures = self.mux.send(commands, later=later)
        flushed = self.mux.flushed() if later and futures is not None else None
        return Sent(self, commands, futures, granted, self._deadline(), flushed=flushed)

    async def run(self, commands: Sequence[Command], fallback: T, later: bool = False) -> list[Any] | T:
        """`send` and wait: the replies, or `fallback`."""
        return await self.send(commands, later=later).replies(fallback)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """`send` calls inside (with no await between them) go to Redis in one write."""
        if self._mux is None:
            yield
            return
        with self._mux.batch():
            yield

    def keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def bound_s(self) -> float:
        return self._bound

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._bound

    async def _bounded(self, op: Callable[[], Awaitable[T]], granted: Pass, deadline: float, fallback: T,
                       answered: Callable[[], bool] | None = None) -> T:
        try:
            async with asyncio.timeout(None) as scope:  # the hard stop, within the sockets' own bounds
                bound = _Bound(scope, deadline, answered)
                self._waiting.add(bound)
                try:
                    result = await op()
                finally:
                    bound.cancel()
                    self._waiting.discard(bound)
        except asyncio.CancelledError:
            self.breaker.end(granted)  # the caller gave up (its client left): no verdict on Redis, the probe slot freed
            raise
        except Exception as exc:  # redis raises its own family, OSError and TimeoutError: all the same here
            self.breaker.record_failure()
            log.debug("redis call failed: %s: %s", type(exc).__name__, exc)
            return fallback
        self._succeeded(granted)
        return result

    def _succeeded(self, granted: Pass) -> None:
        if granted.trial or self.breaker.state is BreakerState.CLOSED:
            # Once open, only a probe closes it: a call sent before it opened that answers late must
            # not close it again (Redis flapping up and down in the log, calls waiting out the bound).
            self.breaker.record_success()

    def _changed(self, state: BreakerState) -> None:
        up = state is BreakerState.CLOSED
        if up == self._up:
            return
        self._up = up
        if up:
            log.warning("redis at %s is back: shared limits, cache and settings resume", self._where())
        else:
            # Calls still waiting on the Redis that has just been found out give up now, rather than
            # each wait out its own bound: the first requests of an outage lose less time.
            for bound in self._waiting:
                bound.expire()
            if self._mux is not None:
                self._mux.drop()  # the probe makes a new connection: this one may have died without a word
            log.warning("redis at %s is not answering within %.0f ms: per-process limits, no cache, until it is "
                        "back", self._where(), self._bound * 1000)
        if self._on_state is not None:
            self._on_state(up)

    def _where(self) -> str:
        url = self.config.url if self.config else ""
        return url.split("@")[-1]  # never a password from the URL in the log

    @property
    def up(self) -> bool:
        return self.config is not None and self._up

    def warm(self) -> None:
        """Open the shared connection in the background (start-up never waits on Redis), so the first
        burst of requests does not all wait on one connection attempt."""
        if self._mux is not None:
            self.keep(asyncio.ensure_future(self._warm()))

    async def _warm(self) -> None:
        with contextlib.suppress(Exception):  # not there yet: the first command connects, bounded
            await self.mux.connect()

    @property
    def mux(self) -> Multiplexed:
        assert self._mux is not None
        return self._mux

    def script(self, source: str) -> Script:
        """A Lua script for `send`: EVALSHA, and EVAL when Redis does not know it (restarted empty)."""
        return self.mux.register(source)

    async def close(self) -> None:
        if self._mux is not None:
            await self._mux.close()
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.aclose(), timeout=1.0)
            except Exception:  # closing a dead connection may fail in many ways; nothing to do about it
                pass


class Sent:
    """Commands sent (or to be sent once connected) on the shared connection; `replies` waits."""

    def __init__(self, link: RedisLink, commands: Sequence[Command], futures: list[asyncio.Future[Any]] | None,
                 granted: Pass | None, deadline: float, flushed: asyncio.Future[float] | None = None) -> None:
        self._link = link
        self._commands = commands
        self._futures = futures
        self._granted = granted  # None: not sent (no Redis, or its breaker is open)
        self._deadline = deadline
        self._flushed = flushed  # written with the write-behind flush: the bound runs from then

    @property
    def skipped(self) -> bool:
        """Not sent at all: Redis is not configured or its breaker is open."""
        return self._granted is None

    async def replies(self, fallback: T) -> list[Any] | T:
        """Every reply in order, or `fallback` when Redis failed, timed out or was skipped."""
        granted = self._granted
        if granted is None:
            return fallback
        mux = self._link.mux
        futures = self._futures
        if futures is not None and all(f.done() and not f.cancelled() and f.exception() is None for f in futures):
            # Answered while the caller worked (the usual case): no bound to set up and take down.
            self._link._succeeded(granted)
            return [f.result() for f in futures]
        deadline = self._deadline
        if self._flushed is not None:
            deadline = await asyncio.shield(self._flushed) + self._link.bound_s  # shared: never cancelled

        async def wait() -> list[Any]:
            if futures is None:
                return await mux.execute(self._commands)
            return await mux.wait(self._commands, futures)

        def answered() -> bool:
            return futures is not None and all(f.done() for f in futures)

        return await self._link._bounded(wait, granted, deadline, fallback, answered)

    def abandon(self) -> None:
        """Nobody will await the replies (the request ended first): wait for them in the background,
        so the breaker still hears how the call went."""
        if self._granted is not None:
            self._link.keep(asyncio.ensure_future(self.replies(None)))


class _Bound:
    """One call's bound. When it comes due late (this process was busy, or not running at all: a
    CPU-throttled container, a long pause), the event loop first gets GRACE_S to read what has arrived
    meanwhile: an answer Redis sent in time, left unread in the socket while the process stood still,
    completes the call instead of counting as Redis not answering (every such stall opened the
    breaker). On time, or after that grace, the call stops. With `answered` (the shared connection's
    calls, whose replies can be seen arriving) the loop always gets that grace, and a call whose replies
    have all arrived is never stopped: on a busy loop the bound can come due between a reply's arrival
    and the caller's turn to run."""

    def __init__(self, scope: asyncio.Timeout, deadline: float, answered: Callable[[], bool] | None = None) -> None:
        self._scope = scope
        self._answered = answered
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_at(deadline, self._due, deadline)

    def _due(self, deadline: float) -> None:
        now = self._loop.time()
        if self._answered is not None and self._answered():
            return
        if now - deadline > GRACE_S or self._answered is not None:
            self._handle = self._loop.call_at(now + GRACE_S, self.expire)
        else:
            self.expire()

    def expire(self) -> None:
        """Stop the call now (unless its replies are all here)."""
        self._handle.cancel()
        if self._answered is not None and self._answered():
            return
        if not self._scope.expired():
            self._scope.reschedule(self._loop.time())

    def cancel(self) -> None:
        self._handle.cancel()


def _lean_connections() -> dict[str, Any]:
    """A new connection is the TCP connect (and AUTH with a password) and then the command: RESP2, no
    CLIENT SETINFO, no maintenance notifications. After an outage every pooled connection is new, and
    a burst of requests opening them at once with redis-py's default handshake (HELLO, CLIENT SETINFO,
    CLIENT MAINT_NOTIFICATIONS: three more round trips each) overran the bound on a busy event loop and
    opened the breaker again. With maintenance notifications on, redis-py also hands out a pooled
    connection Redis has closed (a restart) without checking it first, and relaxes timeouts to seconds."""
    from redis.asyncio.connection import AbstractConnection

    options: dict[str, Any] = {"protocol": 2}
    accepted = inspect.signature(AbstractConnection.__init__).parameters
    if "driver_info" in accepted:  # redis-py 8
        options["driver_info"] = None
    else:
        options.update(lib_name=None, lib_version=None)
    if "maint_notifications_config" in accepted:  # redis-py 7+
        from redis.maint_notifications import MaintNotificationsConfig

        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return options
