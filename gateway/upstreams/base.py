"""The backend contract: one non-streaming call, one streaming call, a readiness probe.

Streams are handed over *primed*: the first data payload has already arrived. That is the
moment the gateway commits to a route; anything that fails before it can still fall back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.upstreams.provider import ProviderAdapter


class Upstream(Protocol):
    adapter: ProviderAdapter

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def complete(self, body: dict[str, Any], request_id: str | None = None,
                       path: str | None = None) -> dict[str, Any]:
        """One chat completion (or, with `path`, another OpenAI endpoint such as /completions);
        raise UpstreamError subclasses on failure."""
        ...

    def stream(self, body: dict[str, Any], request_id: str | None = None,
               path: str | None = None) -> AsyncIterator[bytes]:
        """SSE data payloads (JSON bytes) up to, not including, [DONE]; raise on a break."""
        ...

    async def probe(self) -> bool:
        """Is the backend reachable right now (GET /models, short timeout)?"""
        ...


@dataclass
class PrimedStream:
    head: list[bytes]  # payloads up to and including the first one that carries a token
    rest: AsyncIterator[bytes]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for payload in self.head:
            yield payload
        async for payload in self.rest:
            yield payload

    async def aclose(self) -> None:
        await self.rest.aclose()  # type: ignore[attr-defined]


def carries_token(payload: bytes) -> bool:
    """Does this chunk hold output (text, reasoning, a tool call, a finish or usage), rather
    than only the opening `role` delta that some servers send before generating anything?"""
    chunk = orjson.loads(payload)
    choices = chunk.get("choices")
    if not choices:
        return True
    for choice in choices:
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise TypeError("delta is not an object")
        if choice.get("finish_reason") or choice.get("text") or delta.get("tool_calls") or any(
            delta.get(k) for k in ("content", "reasoning_content", "reasoning")
        ):
            return True
    return False


async def prime(upstream: Upstream, body: dict[str, Any], first_token_s: float,
                request_id: str | None = None, path: str | None = None) -> PrimedStream:
    """Open the stream and wait, within `first_token_s`, for the first payload with a token."""
    events = upstream.stream(body, request_id, path)
    head: list[bytes] = []
    try:
        async with asyncio.timeout(first_token_s):
            while True:
                head.append(await anext(events))
                if carries_token(head[-1]):
                    break
    except StopAsyncIteration:
        raise UpstreamError("upstream stream ended before its first token",
                            backend=upstream.adapter.backend) from None
    except (ValueError, TypeError, AttributeError):  # a first chunk that is not an OpenAI chunk
        await events.aclose()  # type: ignore[attr-defined]
        raise UpstreamError(f"{upstream.adapter.backend} sent a stream chunk the gateway cannot read",
                            backend=upstream.adapter.backend) from None
    except TimeoutError:
        await events.aclose()  # type: ignore[attr-defined]
        raise UpstreamTimeout(f"no first token from {upstream.adapter.backend} within {first_token_s:g} s",
                              backend=upstream.adapter.backend) from None
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return PrimedStream(head, events)


async def idle_bounded(payloads: AsyncIterator[bytes], idle_s: float, backend: str) -> AsyncIterator[bytes]:
    """`payloads`, each within `idle_s` of the last: a stream being assembled for a non-streaming client
    is given up on (and falls back) when the upstream goes quiet mid-answer, whatever the transport."""
    iterator = aiter(payloads)
    while True:
        try:
            async with asyncio.timeout(idle_s):
                payload = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UpstreamTimeout(f"{backend} went quiet for {idle_s:g} s mid-answer", backend=backend) from None
        yield payload
