"""handle_chat(): one request's path, in order, free of FastAPI.

resolve the model and score the request (an unknown model is a 404 before any other work) ->
ground it in the index when asked (the same context for every route) -> for each route in
fallback order whose breaker allows it: build the body for that backend (LiteLLM mapping +
thinking translation) -> call -> on a retryable failure before the first token, try the next
route at once -> return a result or a primed stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.aggregate import assemble
from gateway.context import RequestState
from gateway.cost import cost_cny
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.protocol import ChatCompletionRequest
from gateway.rag import Grounding, RagService
from gateway.routing import RouteDecision, RouteResolver, build_scorer
from gateway.settings import Settings, Timeouts, env_secret
from gateway.streaming import client_events
from gateway.upstreams.base import Upstream, prime
from gateway.upstreams.breaker import CircuitBreaker
from gateway.upstreams.http_transport import HttpUpstream
from gateway.upstreams.litellm_transport import LiteLLMUpstream
from gateway.upstreams.provider import resolve_adapter
from gateway.upstreams.thinking import needs_streamed_upstream, normalize_completion, requested_thinking
from router.routes import Route

log = logging.getLogger("qroute.pipeline")
pause = asyncio.sleep  # between attempts, only when fallback.delay_ms asks for it


@dataclass
class ChatOutcome:
    decision: RouteDecision
    route: Route
    model: str
    upstream_s: float
    attempts: list[str]
    result: dict[str, Any] | None = None
    frames: AsyncIterator[bytes] | None = None
    cost: float | None = None
    grounding: Grounding | None = None


@dataclass
class Backend:
    upstream: Upstream
    breaker: CircuitBreaker
    timeouts: Timeouts


def build_backends(settings: Settings) -> dict[str, Backend]:
    retry = frozenset(settings.fallback.retry_statuses)
    backends: dict[str, Backend] = {}
    for name, cfg in settings.backends.items():
        adapter = resolve_adapter(name, cfg)
        upstream: Upstream
        if cfg.transport == "litellm":
            upstream = LiteLLMUpstream(adapter, cfg.timeouts, retry)
        else:
            upstream = HttpUpstream(adapter, cfg.timeouts, cfg.max_connections, retry)
        breaker = CircuitBreaker(settings.breaker.failure_threshold, settings.breaker.reset_after_s)
        backends[name] = Backend(upstream, breaker, cfg.timeouts)
    return backends


class Gateway:
    def __init__(self, settings: Settings, backends: dict[str, Backend] | None = None) -> None:
        self.settings = settings
        self.backends = backends if backends is not None else build_backends(settings)
        self.resolver = RouteResolver(settings, build_scorer(settings))
        self.rag = RagService(settings.retrieval, settings.rag_default_keys(), env_secret)

    async def start(self) -> None:
        """The index first: if it cannot be opened, no upstream session has been made to leak."""
        await self.rag.start()
        started: list[Backend] = []
        try:
            for backend in self.backends.values():
                await backend.upstream.start()
                started.append(backend)
        except BaseException:
            for backend in started:
                await backend.upstream.close()
            raise

    async def close(self) -> None:
        for backend in self.backends.values():
            await backend.upstream.close()

    def _route_order(self, first: Route) -> list[Route]:
        order = [first]
        for route in self.settings.fallback.order.get(first, []):
            if route not in order:
                order.append(route)
        return order[: self.settings.fallback.max_attempts]

    async def handle_chat(self, request: ChatCompletionRequest, data: dict[str, Any],
                          state: RequestState | None = None) -> ChatOutcome:
        state = state if state is not None else RequestState(request_id=uuid.uuid4().hex)
        # Scored on the client's own messages: the ask's complexity, not the context's length.
        decision = self.resolver.resolve(request.model, data["messages"])
        state.decision = decision  # so an error answer still carries the route and score
        grounding = None
        if self.rag.wanted(request.rag, state.rag_header, state.client_key):
            grounding = await self.rag.ground(data["messages"])
            data = {**data, "messages": grounding.messages}
        explicit_thinking = requested_thinking(data)
        attempts: list[str] = []
        upstream_s = 0.0
        last_error: UpstreamError | None = None
        for route in self._route_order(decision.route):
            route_cfg = self.settings.routes[route]
            backend = self.backends[route_cfg.backend]
            if not backend.breaker.allow():
                attempts.append(f"{route}:circuit_open")
                continue
            if last_error is not None and self.settings.fallback.delay_ms:
                await pause(self.settings.fallback.delay_ms / 1000)
            thinking = route_cfg.thinking if explicit_thinking is None else explicit_thinking
            started = time.perf_counter()
            try:
                outcome = await self._call(backend, request, data, thinking, state)
            except UpstreamError as exc:
                upstream_s += time.perf_counter() - started
                attempts.append(f"{route}:{exc.status}")
                if not exc.retryable:
                    backend.breaker.record_success()  # it answered; the request itself is at fault
                    raise
                backend.breaker.record_failure()
                last_error = exc
                log.warning("route %s failed before its first token: %s", route, exc.message)
                continue
            upstream_s += time.perf_counter() - started
            backend.breaker.record_success()
            attempts.append(f"{route}:ok")
            result, frames = outcome
            model = backend.upstream.adapter.model
            done = ChatOutcome(decision, route, model, upstream_s, attempts, grounding=grounding)
            price = self.settings.price_for(model)
            if result is not None:
                done.result = result
                done.cost = cost_cny(price, result.get("usage"))
            else:
                done.frames = frames
            return done
        raise self._exhausted(attempts, last_error)

    async def _call(self, backend: Backend, request: ChatCompletionRequest, data: dict[str, Any],
                    thinking: bool, state: RequestState,
                    ) -> tuple[dict[str, Any] | None, AsyncIterator[bytes] | None]:
        request_id = state.request_id
        upstream = backend.upstream
        adapter = upstream.adapter
        timeouts = backend.timeouts
        if request.stream:
            body = adapter.build_body(data, thinking, stream=True)
            primed = await prime(upstream, body, timeouts.first_token_s, request_id)
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return None, client_events(primed, include_usage, self._stream_done(backend))
        if needs_streamed_upstream(adapter.provider, thinking, client_streams=False):
            body = adapter.build_body(data, thinking, stream=True)
            primed = await prime(upstream, body, timeouts.first_token_s, request_id)
            try:
                async with asyncio.timeout(timeouts.total_s):
                    return normalize_completion(await assemble(primed)), None
            except TimeoutError:
                raise UpstreamTimeout(f"{adapter.backend} timed out", backend=adapter.backend) from None
            finally:
                await primed.aclose()
        body = adapter.build_body(data, thinking, stream=False)
        return normalize_completion(await upstream.complete(body, request_id)), None

    @staticmethod
    def _stream_done(backend: Backend):
        def done(usage: dict[str, Any] | None, error: GatewayError | None, disconnected: bool) -> None:
            if error is not None:
                backend.breaker.record_failure()
        return done

    def _exhausted(self, attempts: list[str], last: UpstreamError | None) -> UpstreamError:
        tried = ", ".join(attempts)
        if last is None:
            return UpstreamUnavailable(f"no route available: every circuit breaker is open ({tried})",
                                       backend="*")
        last.message = f"{last.message} (attempts: {tried})"
        return last

    async def readiness(self) -> dict[str, Any]:
        names = list(self.backends)
        reachable = await asyncio.gather(*(self.backends[n].upstream.probe() for n in names))
        return {
            name: {
                "reachable": ok,
                "breaker": self.backends[name].breaker.state.value,
                "consecutive_failures": self.backends[name].breaker.consecutive_failures,
                "model": self.backends[name].upstream.adapter.model,
                "api_base": self.backends[name].upstream.adapter.api_base,
            }
            for name, ok in zip(names, reachable, strict=True)
        }

