"""The one way the gateway talks to Redis: every call bounded, a breaker around Redis, and a plain
answer of "no Redis" when it is slow, down or not configured, so no request ever waits on it longer
than the bound and start-up never needs it.

A failed call counts against the breaker; after `failure_threshold` in a row Redis is skipped until
`reset_after_s` has passed, then one probe call is let through. One log line says Redis went away and
one that it is back, never one per request; `qroute_redis_up` says the same to Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from gateway.settings import RedisConfig, env_secret
from gateway.upstreams.breaker import BreakerState, CircuitBreaker

log = logging.getLogger("qroute.redis")
T = TypeVar("T")


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

    @property
    def configured(self) -> bool:
        return self.config is not None

    def key(self, *parts: str) -> str:
        """A key in this deployment's namespace; `{...}` parts are Redis Cluster hash tags."""
        assert self.config is not None
        return ":".join((self.config.prefix, *parts))

    def client(self) -> Any:
        """The client, made on first use (start-up never connects): no retries of its own, every
        socket operation bounded."""
        if self._client is None:
            assert self.config is not None
            from redis.asyncio import Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            password = env_secret(self.config.password_env) if self.config.password_env else None
            self._client = Redis.from_url(self.config.url, password=password, socket_timeout=self._bound,
                                          socket_connect_timeout=self._bound, retry=Retry(NoBackoff(), 0),
                                          decode_responses=True, max_connections=256)
        return self._client

    async def call(self, op: Callable[[Any], Awaitable[T]], fallback: T) -> T:
        """`op(client)` within the bound, or `fallback` when Redis is off, open-breakered or failing."""
        if self.config is None or not self.breaker.allow():
            return fallback
        try:
            async with asyncio.timeout(self._bound):  # a hard stop over the sockets' own bounds
                result = await op(self.client())
        except asyncio.CancelledError:
            self.breaker.record_failure()  # the caller gave up on us: free the probe slot, then go
            raise
        except Exception as exc:  # redis raises its own family, OSError and TimeoutError: all the same here
            self.breaker.record_failure()
            log.debug("redis call failed: %s: %s", type(exc).__name__, exc)
            return fallback
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
