"""Server-sent events to the client: normalized chunks, an error event when the upstream
breaks (never a silent truncation or a hang), and upstream cancellation when the client leaves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson
from starlette.responses import Response

from gateway.errors import GatewayError, UpstreamError, sse_error
from gateway.upstreams.base import PrimedStream
from gateway.upstreams.thinking import normalize_chunk

log = logging.getLogger("qroute.stream")
_DONE = b"data: [DONE]\n\n"


class StreamEnd(Protocol):
    """Told about the stream's usage chunk (returns the cost to put in it) and, once, its end; and,
    when it is capturing, shown every chunk."""

    @property
    def capturing(self) -> bool: ...

    def collect(self, payload: bytes) -> None: ...

    def usage(self, usage: dict[str, Any]) -> float | None: ...

    def done(self, tokens_seen: int, error: GatewayError | None, disconnected: bool) -> None: ...


async def client_events(primed: PrimedStream, include_usage: bool, end: StreamEnd) -> AsyncIterator[bytes]:
    """SSE frames for the client. Usage is always requested upstream (for cost); it is passed on,
    with `qroute_cost_cny` added, only when the client asked with stream_options.include_usage."""
    error: GatewayError | None = None
    finished = False
    payloads = 0
    capturing = end.capturing
    try:
        async for payload in primed:
            payloads += 1
            if capturing:
                end.collect(payload)
            if b'"usage"' in payload:
                chunk = orjson.loads(payload)
                if isinstance(chunk.get("usage"), dict):
                    cost = end.usage(chunk["usage"])
                    if not include_usage:
                        if not chunk.get("choices"):
                            continue
                        chunk.pop("usage")
                    elif cost is not None:
                        chunk["usage"]["qroute_cost_cny"] = round(cost, 8)
                    payload = orjson.dumps(chunk)
            yield b"data: " + normalize_chunk(payload) + b"\n\n"
        finished = True
        yield _DONE
    except UpstreamError as exc:
        error = exc
        log.warning("stream from %s broke: %s", exc.backend, exc.message)
        finished = True
        yield sse_error(exc)
    except Exception:  # anything else (a chunk the gateway could not rewrite): still an error event and [DONE]
        log.exception("stream of %s failed in the gateway", end_name(end))
        error = UpstreamError("the upstream's stream could not be relayed", backend=end_name(end))
        finished = True
        yield sse_error(error)
    finally:
        # About one token per chunk; the role and finish chunks are not tokens.
        end.done(max(payloads - 2, 0), error, not finished)
        await primed.aclose()


def end_name(end: StreamEnd) -> str:
    backend = getattr(end, "backend", None)
    return str(getattr(backend, "name", "upstream"))


class SSEResponse(Response):
    """Streams `frames`; if the client disconnects first, cancels the producer (and with it the
    upstream request), even while the upstream is silent."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[bytes], headers: dict[str, str],
                 after: Callable[[], None] | None = None) -> None:
        self.frames = frames
        self.after = after
        self.status_code = 200
        self.background = None
        self.init_headers({**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                if not task.done():
                    task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
            closer = getattr(self.frames, "aclose", None)
            if closer is not None:  # a producer left at a yield ends (and is accounted) now, not at GC
                await closer()
            if self.after is not None:
                self.after()  # a stream that did not end normally (idempotent when it did)

    async def _pump(self, send: Any) -> None:
        try:
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # client went away mid-send
            return
        if self.after is not None:
            self.after()  # at once: before anything else, such as a scrape, can run on this loop


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class JSONAnswer(Response):
    """A JSON answer that runs `after` once it has been sent (or the client has gone)."""

    media_type = "application/json"

    def __init__(self, body: bytes, headers: dict[str, str], after: Callable[[], None]) -> None:
        super().__init__(body, headers=headers)
        self.after = after

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.after()
