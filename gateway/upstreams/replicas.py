"""Several replicas of one model behind one backend (`api_base` as a list): each request goes to the
healthy replica with the fewest requests in flight; a replica whose /health fails, or that refuses a
connection, is left out until its /health passes again. When none is healthy all are tried, so the
backend's own failure handling (fallback, breaker) still decides.

For more than a handful of GPUs, point the backend at one endpoint of a balancer that knows the
engines' queues and KV caches (an InferencePool, llm-d, vLLM's production-stack router) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.errors import UpstreamUnavailable
from gateway.settings import root_of
from gateway.upstreams.http_transport import HttpUpstream
from gateway.upstreams.provider import ProviderAdapter

log = logging.getLogger("qroute.replicas")


@dataclass
class Replica:
    upstream: HttpUpstream
    in_flight: int = 0
    healthy: bool = True

    @property
    def base(self) -> str:
        return self.upstream.adapter.api_base


class ReplicaSet:
    """An Upstream over several HttpUpstreams of the same model."""

    def __init__(self, upstreams: list[HttpUpstream], health_every_s: float = 2.0) -> None:
        self.replicas = [Replica(u) for u in upstreams]
        self.adapter: ProviderAdapter = upstreams[0].adapter
        self._every = health_every_s
        self._turn = -1
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        for replica in self.replicas:
            await replica.upstream.start()
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        for replica in self.replicas:
            await replica.upstream.close()

    def pick(self) -> Replica:
        """The healthy replica with the fewest requests in flight; ties go round, so light traffic
        still spreads."""
        healthy = [r for r in self.replicas if r.healthy] or self.replicas
        fewest = min(r.in_flight for r in healthy)
        tied = [r for r in healthy if r.in_flight == fewest]
        self._turn = (self._turn + 1) % len(tied)
        return tied[self._turn]

    async def complete(self, body: dict[str, Any], request_id: str | None = None,
                       path: str | None = None) -> dict[str, Any]:
        replica = self.pick()
        replica.in_flight += 1
        try:
            return await replica.upstream.complete(body, request_id, path)
        except UpstreamUnavailable:
            self._down(replica, "refused a connection")
            raise
        finally:
            replica.in_flight -= 1

    async def stream(self, body: dict[str, Any], request_id: str | None = None,
                     path: str | None = None) -> AsyncIterator[bytes]:
        replica = self.pick()
        replica.in_flight += 1
        try:
            async for payload in replica.upstream.stream(body, request_id, path):
                yield payload
        except UpstreamUnavailable:
            self._down(replica, "refused a connection")
            raise
        finally:
            replica.in_flight -= 1

    async def probe(self) -> bool:
        results = await asyncio.gather(*(r.upstream.probe() for r in self.replicas))
        return any(results)

    def _down(self, replica: Replica, why: str) -> None:
        if replica.healthy:
            log.warning("replica %s of %s left out: %s", replica.base, self.adapter.backend, why)
        replica.healthy = False

    async def _check(self, replica: Replica) -> None:
        assert self._session is not None
        try:
            async with asyncio.timeout(1.0), self._session.get(f"{root_of(replica.base)}/health") as resp:
                ok = resp.status < 400
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok and not replica.healthy:
            log.warning("replica %s of %s is healthy again", replica.base, self.adapter.backend)
        elif not ok:
            self._down(replica, "/health failed")
        replica.healthy = ok

    async def _watch(self) -> None:
        while True:
            await asyncio.gather(*(self._check(r) for r in self.replicas))
            await asyncio.sleep(self._every)

    def describe(self) -> list[dict[str, Any]]:
        return [{"api_base": r.base, "healthy": r.healthy, "in_flight": r.in_flight} for r in self.replicas]
