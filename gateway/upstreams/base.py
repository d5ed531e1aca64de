"""The backend contract: one non-streaming call, one streaming call, a readiness probe.

Streams are handed over *primed*: the first data payload has already arrived. That is the
moment the gateway commits to a route; anything that fails before it can still fall back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.upstreams.provider import ProviderAdapter


class Upstream(Protocol):
    adapter: ProviderAdapter

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion; raise UpstreamError subclasses on failure."""
        ...

    def stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """SSE data payloads (JSON bytes) up to, not including, [DONE]; raise on a break."""
        ...

    async def probe(self) -> bool:
        """Is the backend reachable right now (GET /models, short timeout)?"""
        ...


@dataclass
class PrimedStream:
    first: bytes
    rest: AsyncIterator[bytes]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        async for payload in self.rest:
            yield payload

    async def aclose(self) -> None:
        await self.rest.aclose()  # type: ignore[attr-defined]


async def prime(upstream: Upstream, body: dict[str, Any], first_token_s: float) -> PrimedStream:
    """Open the stream and wait for its first payload within `first_token_s`."""
    events = upstream.stream(body)
    try:
        async with asyncio.timeout(first_token_s):
            first = await anext(events)
    except StopAsyncIteration:
        raise UpstreamError("upstream stream ended before its first token",
                            backend=upstream.adapter.backend) from None
    except TimeoutError:
        await events.aclose()  # type: ignore[attr-defined]
        raise UpstreamTimeout(f"no first token from {upstream.adapter.backend} within {first_token_s:g} s",
                              backend=upstream.adapter.backend) from None
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return PrimedStream(first, events)
