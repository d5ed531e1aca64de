"""The hot-path transport: a pooled aiohttp session per backend sending LiteLLM-built bodies.

Foreign exceptions (aiohttp, asyncio timeouts) are translated here, where they enter, into
the gateway's UpstreamError family; so are answers the gateway cannot read (a body or stream line
that is not a JSON object), so that they fall back and count like any other upstream failure.
Compressed answers (a gzip proxy in front of the model server) are decompressed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from gateway.errors import Blame, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.settings import Timeouts
from gateway.upstreams.blame import blame_for
from gateway.upstreams.provider import ProviderAdapter
from gateway.upstreams.scrub import scrub

_DATA = b"data:"
_DONE = b"[DONE]"


def retry_after_seconds(value: str | None) -> float | None:
    """An upstream's Retry-After in seconds (the HTTP-date form is rare from model servers: ignored)."""
    if not value:
        return None
    try:
        return max(float(value.strip()), 0.0)
    except ValueError:
        return None


def upstream_http_error(backend: str, status: int, raw: bytes, retry_statuses: frozenset[int],
                        retry_after: str | None = None, secrets: tuple[str | None, ...] = ()) -> UpstreamError:
    """Turn an upstream error body (vLLM's or DashScope's shape) into an UpstreamError: its message
    scrubbed of secrets, its blame decided (gateway/upstreams/blame.py)."""
    message, code, param = raw[:300].decode("utf-8", "replace"), None, None
    error: dict[str, Any] | None = None
    try:
        err = orjson.loads(raw).get("error")
        if isinstance(err, dict):
            error = err
            message = str(err.get("message") or message)
            code = err.get("code") if isinstance(err.get("code"), str) else None
            param = err.get("param")
        elif isinstance(err, str):
            message = err
    except (orjson.JSONDecodeError, AttributeError):
        pass
    message = scrub(message, secrets)
    return error_for_status(backend, status, message, retry_statuses, blame_for(status, error), code=code,
                            param=param if isinstance(param, str) else None,
                            retry_after=retry_after_seconds(retry_after))


def error_for_status(backend: str, status: int, message: str, retry_statuses: frozenset[int], blame: Blame,
                     code: str | None = None, param: str | None = None,
                     retry_after: float | None = None) -> UpstreamError:
    """The UpstreamError for an upstream's error status once its blame is known (both transports)."""
    if blame is Blame.CONFIG:
        return UpstreamError(f"upstream {backend} refused the gateway's configuration ({status}): {message}; "
                             f"check backends.{backend} (api_key_env, model, api_base)", backend=backend,
                             status=502, code="upstream_misconfigured", upstream_status=status, blame=blame)
    if blame is Blame.REQUEST:
        return UpstreamError(f"upstream {backend} returned {status}: {message}", backend=backend,
                             status=status if status < 500 else 400, retryable=False, code=code, param=param,
                             upstream_status=status, blame=blame)
    return UpstreamError(f"upstream {backend} returned {status}: {message}", backend=backend,
                         status=status if status < 500 else 502, retryable=status in retry_statuses, code=code,
                         param=param, upstream_status=status, retry_after=retry_after, blame=blame)


def _is_object(payload: bytes) -> bool:
    try:
        return isinstance(orjson.loads(payload), dict)
    except orjson.JSONDecodeError:
        return False


class HttpUpstream:
    def __init__(self, adapter: ProviderAdapter, timeouts: Timeouts, max_connections: int,
                 retry_statuses: frozenset[int]) -> None:
        self.adapter = adapter
        self.timeouts = timeouts
        self.retry_statuses = retry_statuses
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"content-type": "application/json", **adapter.headers}
        # Non-streamed: the whole answer precedes the headers (total_s bounds them); the body then reads
        # under idle_s (see _read_body).
        self._complete_timeout = aiohttp.ClientTimeout(total=timeouts.total_s, sock_connect=timeouts.connect_s)
        self._stream_timeout = aiohttp.ClientTimeout(
            total=timeouts.total_s, sock_connect=timeouts.connect_s, sock_read=timeouts.idle_s
        )

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=30, ttl_dns_cache=300)
        # aiohttp advertises gzip and deflate: decompress what comes back that way.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                              skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "HttpUpstream.start() was not awaited"
        return self._session

    def _translate(self, exc: BaseException) -> UpstreamError:
        name = self.adapter.backend
        if isinstance(exc, UpstreamError):
            return exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamUnavailable(f"cannot connect to {name}: {exc.os_error}", backend=name)
        if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
            return UpstreamTimeout(f"{name} timed out", backend=name)
        return UpstreamError(f"connection to {name} broke: {type(exc).__name__}", backend=name)

    def _request_headers(self, request_id: str | None) -> dict[str, str]:
        return {**self._headers, "x-request-id": request_id} if request_id else self._headers

    def _url(self, path: str | None) -> str:
        return f"{self.adapter.api_base}{path}" if path else self.adapter.url

    async def complete(self, body: dict[str, Any], request_id: str | None = None,
                       path: str | None = None) -> dict[str, Any]:
        try:
            async with self.session.post(self._url(path), data=orjson.dumps(body),
                                         headers=self._request_headers(request_id),
                                         timeout=self._complete_timeout) as resp:
                raw = await self._read_body(resp)
                if resp.status >= 400:
                    raise upstream_http_error(self.adapter.backend, resp.status, raw, self.retry_statuses,
                                              resp.headers.get("retry-after"), self._secrets)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._translate(exc) from None
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise UpstreamError(f"{self.adapter.backend} sent a body that is not a JSON object",
                                backend=self.adapter.backend)
        return answer

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes:
        """The body, each read bounded by idle_s: an upstream that stops mid-body is given up on then."""
        parts: list[bytes] = []
        while True:
            async with asyncio.timeout(self.timeouts.idle_s):
                part = await resp.content.readany()
            if not part:
                return b"".join(parts)
            parts.append(part)

    @property
    def _secrets(self) -> tuple[str | None, ...]:
        return (self.adapter.api_key,)

    async def stream(self, body: dict[str, Any], request_id: str | None = None,
                     path: str | None = None) -> AsyncIterator[bytes]:
        resp = None
        try:
            resp = await self.session.post(self._url(path), data=orjson.dumps(body),
                                           headers=self._request_headers(request_id),
                                           timeout=self._stream_timeout)
            if resp.status >= 400:
                raw = await self._read_body(resp)
                raise upstream_http_error(self.adapter.backend, resp.status, raw, self.retry_statuses,
                                          resp.headers.get("retry-after"), self._secrets)
            async for line in resp.content:
                if not line.startswith(_DATA):
                    continue
                payload = line[5:].strip()
                if payload == _DONE:
                    resp.release()
                    return
                if payload.startswith(b'{"error"'):
                    raise upstream_http_error(self.adapter.backend, 500, payload, self.retry_statuses,
                                              secrets=self._secrets)
                if not _is_object(payload):
                    raise UpstreamError(f"{self.adapter.backend} sent a stream chunk that is not a JSON object",
                                        backend=self.adapter.backend)
                yield payload
            raise UpstreamError(f"{self.adapter.backend} ended the stream without [DONE]",
                                backend=self.adapter.backend)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._translate(exc) from None
        finally:
            # Not released after [DONE]: the client left or the stream broke. Close the
            # connection so the upstream stops generating.
            if resp is not None and not resp.closed:
                resp.close()

    async def probe(self) -> bool:
        try:
            async with asyncio.timeout(1.0):
                async with self.session.get(f"{self.adapter.api_base}/models", headers=self._headers) as resp:
                    return resp.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False
