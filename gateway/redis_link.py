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
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.settings import RedisConfig, env_secret
from gateway.upstreams.breaker import BreakerState, CircuitBreaker

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
        if config is not None:
            self.client()  # import the library and make the client now: never inside a call's bound

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
        probe = self.breaker.state is not BreakerState.CLOSED
        if not self.breaker.allow():
            return fallback
        client = self.client()
        try:
            async with asyncio.timeout(None) as scope:  # the hard stop, within the sockets' own bounds
                bound = _Bound(scope, asyncio.get_running_loop().time() + self._bound)
                self._waiting.add(bound)
                try:
                    result = await op(client)
                finally:
                    bound.cancel()
                    self._waiting.discard(bound)
        except asyncio.CancelledError:
            self.breaker.record_failure()  # the caller gave up on us: free the probe slot, then go
            raise
        except Exception as exc:  # redis raises its own family, OSError and TimeoutError: all the same here
            self.breaker.record_failure()
            log.debug("redis call failed: %s: %s", type(exc).__name__, exc)
            return fallback
        if probe or self.breaker.state is BreakerState.CLOSED:
            # Once open, only a probe closes it: a call sent before it opened that answers late must
            # not close it again (Redis flapping up and down in the log, calls waiting out the bound).
            self.breaker.record_success()
        return result

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

    async def close(self) -> None:
        if self._client is not None:
            try:
                await asyncio.wait_for(self._client.aclose(), timeout=1.0)
            except Exception:  # closing a dead connection may fail in many ways; nothing to do about it
                pass


class _Bound:
    """One call's bound. When it comes due late (this process was busy, or not running at all: a
    CPU-throttled container, a long pause), the event loop first gets GRACE_S to read what has arrived
    meanwhile: an answer Redis sent in time, left unread in the socket while the process stood still,
    completes the call instead of counting as Redis not answering (every such stall opened the
    breaker). On time, or after that grace, the call stops."""

    def __init__(self, scope: asyncio.Timeout, deadline: float) -> None:
        self._scope = scope
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_at(deadline, self._due, deadline)

    def _due(self, deadline: float) -> None:
        now = self._loop.time()
        if now - deadline > GRACE_S:
            self._handle = self._loop.call_at(now + GRACE_S, self.expire)
        else:
            self.expire()

    def expire(self) -> None:
        """Stop the call now."""
        self._handle.cancel()
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
