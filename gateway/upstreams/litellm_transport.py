"""The full-LiteLLM transport (`transport: litellm`): `litellm.acompletion` does the call.

For providers that are not OpenAI-compatible, or to compare against the direct transport. It
costs LiteLLM's per-call overhead (measured ~2.2 ms per call, ~5.6 ms per stream over raw
HTTP); retries are off here because fallback is the gateway's job.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.settings import Timeouts
from gateway.upstreams.blame import blame_for
from gateway.upstreams.http_transport import error_for_status, retry_after_seconds
from gateway.upstreams.provider import ProviderAdapter, import_litellm
from gateway.upstreams.scrub import scrub

_SENT_BY_LITELLM = frozenset({"model", "messages", "stream", "stream_options"})


class LiteLLMUpstream:
    def __init__(self, adapter: ProviderAdapter, timeouts: Timeouts, retry_statuses: frozenset[int]) -> None:
        self.adapter = adapter
        self.timeouts = timeouts
        self.retry_statuses = retry_statuses
        self._litellm = import_litellm()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _kwargs(self, body: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        standard = {k: v for k, v in body.items() if k in self.adapter.supported and k not in _SENT_BY_LITELLM}
        extras = {k: v for k, v in body.items() if k not in self.adapter.supported and k not in _SENT_BY_LITELLM}
        return {
            "model": self.adapter.litellm_model,
            "messages": body["messages"],
            "api_base": self.adapter.api_base,
            "api_key": self.adapter.api_key or "none",
            "timeout": self.timeouts.total_s,
            "max_retries": 0,
            "num_retries": 0,
            "extra_body": extras,
            "extra_headers": {"x-request-id": request_id} if request_id else None,
            **standard,
        }

    def _translate(self, exc: Exception) -> UpstreamError:
        lt = self._litellm
        name = self.adapter.backend
        if isinstance(exc, lt.Timeout):
            return UpstreamTimeout(f"{name} timed out", backend=name)
        if isinstance(exc, lt.APIConnectionError):
            return UpstreamUnavailable(f"cannot connect to {name}", backend=name)
        status = int(getattr(exc, "status_code", 502) or 502)
        message = scrub(str(getattr(exc, "message", None) or exc), (self.adapter.api_key,))
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None and hasattr(response, "headers") \
            else None
        error = None
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            error = body.get("error") if isinstance(body.get("error"), dict) else body
        return error_for_status(name, status, message, self.retry_statuses, blame_for(status, error),
                                retry_after=retry_after_seconds(retry_after))

    def _chat_only(self, path: str | None) -> None:
        if path is not None:  # routing never sends other endpoints here (serves_completions is False)
            raise UpstreamError(f"{self.adapter.backend} (transport: litellm) serves chat completions only",
                                backend=self.adapter.backend, status=400, retryable=False)

    async def complete(self, body: dict[str, Any], request_id: str | None = None,
                       path: str | None = None) -> dict[str, Any]:
        self._chat_only(path)
        try:
            response = await self._litellm.acompletion(stream=False, **self._kwargs(body, request_id))
        except Exception as exc:  # LiteLLM raises its own hierarchy; translate all of it here.
            raise self._translate(exc) from None
        return response.model_dump()

    async def stream(self, body: dict[str, Any], request_id: str | None = None,
                     path: str | None = None) -> AsyncIterator[bytes]:
        self._chat_only(path)
        try:
            response = await self._litellm.acompletion(
                stream=True, stream_options=body.get("stream_options"), **self._kwargs(body, request_id)
            )
            async for chunk in response:
                yield orjson.dumps(chunk.model_dump(exclude_none=True))
        except Exception as exc:
            raise self._translate(exc) from None

    async def probe(self) -> bool:
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session, session.get(
                f"{self.adapter.api_base}/models", timeout=aiohttp.ClientTimeout(total=1.0)
            ) as resp:
                return resp.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False
