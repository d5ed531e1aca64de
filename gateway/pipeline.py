"""handle_chat(): one request's path, in order, free of FastAPI.

resolve the model and score the request (an unknown model is a 404 before any other work) ->
ground it in the index when asked (the same context for every route) -> for each route in
fallback order whose breaker allows it: build the body for that backend (LiteLLM mapping +
thinking translation) -> call -> on a retryable failure before the first token, try the next
route at once -> return a result or a primed stream. The request's record (`RequestState`) is
priced and finished here, or by the stream when it ends; errors are finished by the app's handler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from gateway.accounting import StreamAccount, answer_text, attach_cost
from gateway.admission import BackendOverloaded
from gateway.aggregate import assemble
from gateway.backends import Backend, build_backends
from gateway.cache import CachedAnswer, CachePolicy, Prefetch, ResponseCache, cache_key, policy_for, request_digest
from gateway.context import Attempt, RequestState, Served
from gateway.cost import CostModel, TokenUsage
from gateway.errors import (
    Blame,
    GatewayError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.limits import Admitting, Limiter
from gateway.metrics import Recorder, build_recorder
from gateway.model_slot import ModelSlot
from gateway.passthrough import COMPLETION_FIELDS, OPENAI_FIELDS
from gateway.protocol import ChatCompletionRequest, CompletionRequest
from gateway.rag import Grounding, RagService
from gateway.redis_link import RedisLink
from gateway.router_sync import RouterSync
from gateway.routing import Needs, RouteDecision, RouteResolver, build_scorer
from gateway.settings import Settings, env_secret
from gateway.shadow import Job, Shadow
from gateway.shadow_calls import ShadowCalls
from gateway.spill import SpillController, SpillState, VllmQueueReader
from gateway.streaming import client_events
from gateway.upstreams.base import PrimedStream, idle_bounded, prime
from gateway.upstreams.load import Occupancy
from gateway.upstreams.replicas import ReplicaSet
from gateway.upstreams.thinking import needs_streamed_upstream, normalize_completion, requested_thinking
from router.decide import Thresholds
from router.routes import CLOUD, LOCAL, LOCAL_THINK, Route
from textkit.conversation import full_text, has_images

# What /v1/completions forwards besides a backend's pass-through list.
_COMPLETION_OPENAI = frozenset(CompletionRequest.model_fields) | COMPLETION_FIELDS | OPENAI_FIELDS

log = logging.getLogger("qroute.pipeline")
COMPLETIONS_PATH = "/completions"
Answer = tuple[dict[str, Any] | None, PrimedStream | None]  # a whole result, or a stream primed at its first token
pause = asyncio.sleep  # between attempts, only when fallback.delay_ms asks for it


# What reading an answer of the wrong shape raises (pydantic's ValidationError is a ValueError).
UNREADABLE = (ValueError, TypeError, AttributeError, KeyError)


def unreadable(backend: str, exc: Exception) -> UpstreamError:
    """An answer that is JSON but not an OpenAI answer: the upstream's fault, so it falls back and counts."""
    return UpstreamError(f"{backend} sent an answer the gateway cannot read ({type(exc).__name__})", backend=backend)


def _nothing() -> None:
    return None


@dataclass
class ChatOutcome:
    """What the HTTP layer renders: a JSON result or SSE frames, and the grounding used. `account`
    records the request (metrics) and is called once the answer is out, so recording never adds
    to the client's latency."""

    result: dict[str, Any] | None = None
    frames: AsyncIterator[bytes] | None = None
    grounding: Grounding | None = None
    account: Callable[[], None] = _nothing


class Gateway:
    def __init__(self, settings: Settings, backends: dict[str, Backend] | None = None,
                 metrics: Recorder | None = None) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else build_recorder(settings)
        self.backends = backends if backends is not None else build_backends(settings, self.metrics)
        self.resolver = RouteResolver(settings, build_scorer(settings))
        self.rag = RagService(settings.retrieval, settings.rag_default_keys(), env_secret)
        self.costs = CostModel(settings)
        self.metrics.thresholds_changed(self.resolver.thresholds.current)
        self.replica = settings.server.replica_id or f"{socket.gethostname()}:{os.getpid()}"
        self.redis = RedisLink(settings.redis, on_state=self.metrics.redis_state, replica=self.replica)
        self.limiter = Limiter(settings.limits, self.redis, on_event=self.metrics.limit_event)
        self.cache = ResponseCache(settings.cache, self.redis, on_index_miss=self.metrics.cache_index_miss)
        self.model = ModelSlot(self.resolver, settings.router.model_path)
        self.router_sync = RouterSync(self.resolver.thresholds, self.redis, self.replica,
                                      on_change=self.metrics.thresholds_changed, on_model=self.model.follow,
                                      model_path=lambda: self.model.path)
        self.model.connect(self.router_sync)
        self.spill = SpillController(settings.spill, self._spill_states(), on_change=self.metrics.spill_changed)
        self.shadow_calls = ShadowCalls(settings, self.backends, self.costs, self._call)
        self.shadow = Shadow(settings.router.shadow, self.shadow_calls, self.redis, self.metrics.shadow_event)
        self._background: set[asyncio.Task[Any]] = set()

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
        self.redis.warm()
        await self.router_sync.start()  # bounded: start-up never waits on Redis
        await self.cache.index.start()
        await self.spill.start()

    async def close(self) -> None:
        await self.router_sync.close()
        await self.cache.index.close()
        await self.spill.close()
        for task in list(self._background):
            task.cancel()
        await self.shadow_calls.close()
        for backend in self.backends.values():
            await backend.upstream.close()
        await self.redis.close()

    def _spill_states(self) -> dict[str, SpillState]:
        """The backends local routes use can spill: each with its admission queue and vLLM reader."""
        states = {}
        for route in (LOCAL, LOCAL_THINK):
            name = self.settings.routes[route].backend
            cfg = self.settings.backends[name]
            if name in states or name == self.settings.routes[CLOUD].backend:
                continue
            reader = VllmQueueReader(name, cfg.metrics_urls(), self.settings.spill.poll_s)
            states[name] = SpillState(name, self.backends[name].admission, reader)
        return states

    async def set_thresholds(self, new: Thresholds, admin_id: str) -> str:
        """Ops changed the thresholds (PUT /admin/router): persisted, shared with every replica,
        audited, exported. Returns where it is shared ("here only" while Redis is not answering)."""
        return await self.router_sync.change(new, admin_id)

    def _spawn(self, work: Awaitable[Any]) -> None:
        """Bookkeeping that must not hold up an answer (limits settled, cache written)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _route_order(self, first: Route, needs: Needs) -> list[Route]:
        """The chosen route, then its fallbacks that can serve this request, up to max_attempts."""
        order = [first]
        for route in self.settings.fallback.order.get(first, []):
            if route not in order and self.resolver.can_serve(route, needs):
                order.append(route)
        return order[: self.settings.fallback.max_attempts]

    async def handle_chat(self, request: ChatCompletionRequest, data: dict[str, Any],
                          state: RequestState | None = None) -> ChatOutcome:
        state = state if state is not None else RequestState(request_id=uuid.uuid4().hex, chat=True)
        # Scored on the client's own messages: the ask's complexity, not the context's length.
        needs = Needs(vision=has_images(data["messages"]), n=(request.n or 1) > 1)
        explicit_thinking = requested_thinking(data)

        def thinking_for(route: Route) -> bool:
            return self.settings.routes[route].thinking if explicit_thinking is None else explicit_thinking

        wants_rag = self.rag.wanted(request.rag, state.rag_header, state.client_key)
        policy = policy_for(self.settings.cache, data, request.stream, state.cache_control)
        # One write to Redis: the key's admission and, for a cacheable request that needs no retrieval,
        # the cached answer of each route it may take. Redis answers while the request is scored.
        with self.redis.batch():
            admitting = self.limiter.start(state.client_key, state.request_id)
            prefetch = self._prefetch(request.model, data, thinking_for) \
                if policy is not None and policy.read and not wants_rag else None
        try:
            await self._admit_and_decide(state, admitting, request.model, data["messages"], needs)
        except BaseException:
            if prefetch is not None:
                prefetch.abandon()
            raise
        grounding = None
        if wants_rag:
            retrieval_started = time.perf_counter()
            try:
                grounding = await self.rag.ground(data["messages"])
            finally:
                state.retrieval_s = time.perf_counter() - retrieval_started
            data = {**data, "messages": grounding.messages}
        grounded = data

        async def call(backend: Backend, route: Route) -> Answer:
            return await self._call(backend, request, grounded, thinking_for(route), state)

        cached = await self._from_cache(state, policy, prefetch, data, thinking_for, grounding is not None)
        if isinstance(cached, ChatOutcome):
            cached.grounding = grounding
            return cached
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        assert state.decision is not None
        if state.decision.reason.startswith("auto:") and self.shadow.wants(state.decision.score,
                                                                           self.resolver.thresholds.current):
            state.shadow_data = grounded  # the same request goes to the other route once this one is answered
        outcome = await self._serve(state, needs, call, include_usage, lambda: full_text(grounded["messages"]))
        outcome.grounding = grounding
        if outcome.result is not None and state.shadow_data is not None:
            state.answer_text = answer_text(outcome.result)
        if cached is not None and outcome.result is not None:
            self._keep_in_cache(state, outcome, cached)
        return outcome

    def _cache_key(self, route: Route, thinking_for: Callable[[Route], bool], digest: str) -> str:
        backend = self.backends[self.settings.routes[route].backend]
        return cache_key(backend.name, backend.upstream.adapter.model, thinking_for(route), digest)

    def _prefetch(self, model: str, data: dict[str, Any], thinking_for: Callable[[Route], bool]) -> Prefetch:
        """Ask for the cached answer of every route this request may take, before it is scored."""
        digest = request_digest(data, None)
        keys = [self._cache_key(route, thinking_for, digest) for route in self.resolver.candidates(model)]
        return self.cache.prefetch(list(dict.fromkeys(keys)), digest)

    async def _from_cache(self, state: RequestState, policy: CachePolicy | None, prefetch: Prefetch | None,
                          data: dict[str, Any], thinking_for: Callable[[Route], bool],
                          grounded: bool) -> ChatOutcome | str | None:
        """A cached answer (a hit), the key to store this answer under (a miss), or None (not cached)."""
        if policy is None:
            return None
        assert state.decision is not None
        route = state.decision.route
        if prefetch is not None:
            key = self._cache_key(route, thinking_for, prefetch.digest)
            hit = await prefetch.answer(key)
        else:  # grounded (the key covers the context), or not to be read
            digest = request_digest(data, self.rag.index_version if grounded else None)
            key = self._cache_key(route, thinking_for, digest)
            hit = await self.cache.get(key) if policy.read else None
        self.metrics.cache_lookup("hit" if hit is not None else "miss")
        if hit is None:
            state.cache = "miss"
            return key if policy.write else None
        state.cache = "hit"
        state.attempts.append(Attempt(route, "cache"))
        state.served = Served(hit.route, hit.backend, hit.model)  # type: ignore[arg-type]
        state.cost_cny, state.cloud_equivalent_cny = 0.0, hit.cloud_equivalent_cny
        state.overhead_s = state.elapsed()
        self.metrics.cache_saved(hit.cost_cny or 0.0)
        result = {**hit.result, "usage": {**(hit.result.get("usage") or {}), "qroute_cost_cny": 0.0}}
        return ChatOutcome(result=result, account=partial(self.finish, state, "ok"))

    def _keep_in_cache(self, state: RequestState, outcome: ChatOutcome, key: str) -> None:
        """Store the answer once it has been sent."""
        assert outcome.result is not None and state.served is not None
        answer = CachedAnswer(outcome.result, state.served.route, state.served.backend, state.served.model,
                              state.cost_cny, state.cloud_equivalent_cny)
        sent = outcome.account

        def account_then_store() -> None:
            sent()
            self._spawn(self.cache.put(key, answer))

        outcome.account = account_then_store

    async def handle_completion(self, request: CompletionRequest, data: dict[str, Any],
                                state: RequestState | None = None) -> ChatOutcome:
        """The legacy POST /v1/completions: routed by the prompt's score to a backend that serves it
        (vLLM does), passed through as it came, priced and recorded like chat."""
        state = state if state is not None else RequestState(request_id=uuid.uuid4().hex, chat=True)
        state.operation = "text_completion"
        prompt = request.prompt_text()
        needs = Needs(completions=True, n=(request.n or 1) > 1)
        admitting = self.limiter.start(state.client_key, state.request_id)
        await self._admit_and_decide(state, admitting, request.model, [{"role": "user", "content": prompt}], needs)

        async def call(backend: Backend, route: Route) -> Answer:
            adapter = backend.upstream.adapter
            body = {k: v for k, v in data.items() if k in _COMPLETION_OPENAI or k in adapter.passthrough}
            body["model"] = adapter.model
            if request.stream:
                body["stream_options"] = {"include_usage": True}  # for the cost; hidden again if not asked
                return None, await prime(backend.upstream, body, backend.timeouts.first_token_s, state.request_id,
                                         path=COMPLETIONS_PATH)
            return await backend.upstream.complete(body, state.request_id, path=COMPLETIONS_PATH), None

        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return await self._serve(state, needs, call, include_usage, lambda: prompt)

    async def _admit_and_decide(self, state: RequestState, admitting: Admitting | None, model: str,
                                messages: list[dict[str, Any]], needs: Needs) -> None:
        """The key's limits (429 when over one) and the route. The admission has been sent to Redis;
        the request is scored while Redis answers. A refusal still wins over everything the scoring
        may raise (an unknown model), as the limits come first, and nothing is placed on a route (spill
        caps, metrics) for a refused request."""
        try:
            decision = await self._score(state, model, messages, needs)
        finally:
            state.ticket = await self.limiter.admitted(admitting)
        state.priority = self.limiter.priority_for(state.client_key, state.priority_header)
        state.decision = self._spill_over(decision, needs)

    async def _score(self, state: RequestState, model: str, messages: list[dict[str, Any]],
                     needs: Needs) -> RouteDecision:
        started = time.perf_counter()
        if state.large_body:  # scoring grows with the text: off the event loop, as the parsing was
            decision = await asyncio.to_thread(self.resolver.resolve, model, messages, needs)
        else:
            decision = self.resolver.resolve(model, messages, needs)
        state.scoring_s = time.perf_counter() - started
        return decision

    def _spill_over(self, decision: RouteDecision, needs: Needs) -> RouteDecision:
        """`auto` traffic for a saturated local backend goes to the cloud while the caps allow."""
        if decision.reason.startswith("auto:"):
            backend = self.settings.routes[decision.route].backend
            if decision.route != CLOUD and self.spill.saturated(backend) and self.spill.allowed() \
                    and self.resolver.can_serve(CLOUD, needs):
                self.metrics.spilled(decision.route)
                decision = RouteDecision(CLOUD, decision.score, "auto:spill")
            self.spill.record_decision(decision.route == CLOUD)
        return decision

    async def _serve(self, state: RequestState, needs: Needs, call: Callable[[Backend, Route], Awaitable[Answer]],
                     include_usage: bool, prompt: Callable[[], str]) -> ChatOutcome:
        """Try the decided route, then its fallbacks: the first answer (or primed stream) wins.

        Every attempt gives its breaker pass back however it ends (answer, any exception, cancellation),
        so a half-open trial never stays in flight. Who is charged follows the blame rule
        (gateway/upstreams/blame.py); `unsure` holds 5xx answers not yet charged or forgiven."""
        assert state.decision is not None
        last_error: UpstreamError | None = None
        overloaded: BackendOverloaded | None = None
        unsure: list[Backend] = []
        for route in self._route_order(state.decision.route, needs):
            backend = self.backends[self.settings.routes[route].backend]
            granted = backend.breaker.enter()
            if granted is None:
                state.attempts.append(Attempt(route, "circuit_open"))
                continue
            try:
                result, frames, occupancy = await self._attempt(state, backend, route, call, last_error is not None)
            except BackendOverloaded as exc:
                # Local full and its queue wait passed: like an upstream's 503, the next route in the
                # fallback order takes an `auto` request (a spill-over that came too late for this one);
                # a pinned route never moves.
                if not state.decision.reason.startswith("auto") or 503 not in self.settings.fallback.retry_statuses:
                    raise
                overloaded = exc
                continue
            except UpstreamError as exc:
                if not self._failed(state, backend, route, exc, unsure):
                    raise
                last_error = exc
                log.warning("route %s failed before its first token: %s", route, exc.message)
                continue
            finally:
                backend.breaker.end(granted)
            self._settle(unsure, charge=True)  # another route answered: the request was servable
            backend.breaker.record_success()
            backend.config_error = None
            state.attempts.append(Attempt(route, "ok"))
            state.served = Served(route, backend.name, backend.upstream.adapter.model)
            state.overhead_s = state.elapsed() - state.upstream_s
            if frames is None:
                assert result is not None
                self._price(state, backend, occupancy, TokenUsage.from_openai(result.get("usage")))
                attach_cost(result, state.cost_cny)
                return ChatOutcome(result=result, account=partial(self.finish, state, "ok"))
            state.first_token_s = state.elapsed()
            end = StreamAccount(self._price, self.finish, state, backend, occupancy, prompt)
            return ChatOutcome(frames=client_events(frames, include_usage, end), account=end.account)
        self._settle(unsure, charge=True)  # no other route answered it or failed it the same way
        if last_error is None and overloaded is not None:
            raise overloaded
        raise self._exhausted(state, last_error)

    async def _attempt(self, state: RequestState, backend: Backend, route: Route,
                       call: Callable[[Backend, Route], Awaitable[Answer]],
                       after_failure: bool) -> tuple[dict[str, Any] | None, PrimedStream | None, Occupancy]:
        """One route: admission, then the call, the backend's load kept whatever happens."""
        if after_failure and self.settings.fallback.delay_ms:
            await pause(self.settings.fallback.delay_ms / 1000)
        try:
            waited = await backend.admission.acquire(state.priority)
        except BackendOverloaded as exc:
            state.attempts.append(Attempt(route, "overloaded"))
            self.metrics.admission_waited(backend.name, exc.waited_s)  # refused waits count too
            raise
        if backend.admission.max_concurrent is not None:
            self.metrics.admission_waited(backend.name, waited)
        if backend.pool_full:
            self.metrics.pool_full(backend.name)
        occupancy = backend.load.enter()
        self.metrics.backend_entered(backend.name)
        started = time.perf_counter()
        try:
            result, frames = await call(backend, route)
        except BaseException:
            state.upstream_s += time.perf_counter() - started
            self._leave(backend, occupancy)
            raise
        state.upstream_s += time.perf_counter() - started
        return result, frames, occupancy

    def _failed(self, state: RequestState, backend: Backend, route: Route, exc: UpstreamError,
                unsure: list[Backend]) -> bool:
        """Account one failed attempt by its blame; True when the next route should be tried."""
        state.attempts.append(Attempt(route, exc.attempt_result))
        if exc.upstream_status in (429, 503):
            self.spill.refused(backend.name)
        if exc.blame is Blame.REQUEST or not exc.retryable:
            backend.breaker.record_success()  # it answered; the request itself is at fault
            self.metrics.upstream_failed(backend.name, exc.blame.value, False)
            self._settle(unsure, charge=False)  # ... and most likely was at the route before too
            return False
        if exc.blame is Blame.UNSURE:
            if unsure:  # a second route failed the same request with a 5xx: the request is the common factor
                self.metrics.upstream_failed(backend.name, exc.blame.value, False)
                self._settle(unsure, charge=False)
            else:
                unsure.append(backend)
            return True
        if exc.blame is Blame.CONFIG:
            backend.config_error = exc.message
            self.metrics.upstream_misconfigured(backend.name, exc.upstream_status or 0)
            log.error("backend %s is misconfigured: %s", backend.name, exc.message)
        backend.breaker.record_failure()
        self.metrics.upstream_failed(backend.name, exc.blame.value, True)
        return True

    def _settle(self, unsure: list[Backend], charge: bool) -> None:
        """Charge (or forgive) the 5xx answers held back while the request's fate was unknown."""
        for backend in unsure:
            if charge:
                backend.breaker.record_failure()
            self.metrics.upstream_failed(backend.name, Blame.UNSURE.value, charge)
        unsure.clear()

    async def _call(self, backend: Backend, request: ChatCompletionRequest, data: dict[str, Any],
                    thinking: bool, state: RequestState) -> Answer:
        request_id = state.request_id
        upstream = backend.upstream
        adapter = upstream.adapter
        timeouts = backend.timeouts
        if request.stream:
            body = adapter.build_body(data, thinking, stream=True)
            return None, await prime(upstream, body, timeouts.first_token_s, request_id)
        if needs_streamed_upstream(adapter.provider, thinking, client_streams=False) or (
                backend.non_streaming == "stream" and not data.get("logprobs")):
            # Streamed and assembled: first_token_s and idle_s bound it, as they bound a stream, and a
            # hang mid-answer falls back (nothing has reached the client yet).
            body = adapter.build_body(data, thinking, stream=True)
            primed = await prime(upstream, body, timeouts.first_token_s, request_id)
            try:
                async with asyncio.timeout(timeouts.total_s):
                    return normalize_completion(
                        await assemble(idle_bounded(aiter(primed), timeouts.idle_s, adapter.backend))), None
            except TimeoutError:
                raise UpstreamTimeout(f"{adapter.backend} timed out", backend=adapter.backend) from None
            except UNREADABLE as exc:
                raise unreadable(adapter.backend, exc) from None
            finally:
                await primed.aclose()
        body = adapter.build_body(data, thinking, stream=False)
        answer = await upstream.complete(body, request_id)
        try:
            return normalize_completion(answer), None
        except UNREADABLE as exc:
            raise unreadable(adapter.backend, exc) from None

    # --- accounting ---------------------------------------------------------------------------
    def _leave(self, backend: Backend, occupancy: Occupancy) -> tuple[float, float]:
        self.metrics.backend_left(backend.name)
        busy_s, concurrency = backend.load.leave(occupancy)
        backend.admission.release(busy_s)
        return busy_s, concurrency

    def _price(self, state: RequestState, backend: Backend, occupancy: Occupancy, usage: TokenUsage | None) -> None:
        busy_s, concurrency = self._leave(backend, occupancy)
        assert state.served is not None
        state.usage = usage
        state.cost_cny = self.costs.cost(backend.name, state.served.model, usage, busy_s, concurrency)
        state.cloud_equivalent_cny = self.costs.cloud_equivalent(usage)

    def finish(self, state: RequestState, outcome: str) -> None:
        """Record the request once, whoever ends it, and settle what its key's limits admitted."""
        if state.finished or not state.chat:
            return
        state.finished = True
        self.metrics.request_finished(state, outcome)
        if state.decision is not None and state.decision.reason == "auto:spill" and state.cost_cny:
            self.spill.record_spend(state.cost_cny)
        if outcome == "ok" and state.shadow_data is not None and state.answer_text and state.served is not None:
            score = state.decision.score if state.decision else 0.0
            self.shadow.submit(Job(state.request_id, state.served.route, score, state.shadow_data, state.answer_text,
                                   state.served.model), self._spawn)
        if state.ticket is not None:
            usage = state.usage if state.cache != "hit" else None  # a hit used no upstream tokens
            tokens = usage.prompt + usage.completion if usage is not None else 0
            self._spawn(self.limiter.settle(state.ticket, tokens, state.cost_cny or 0.0))

    def finish_with_error(self, state: RequestState, err: GatewayError) -> None:
        if isinstance(err, RateLimited):
            self.metrics.rate_limited(err.limit)
        self.finish(state, err.outcome)

    def _exhausted(self, state: RequestState, last: UpstreamError | None) -> UpstreamError:
        """Every route failed: the gateway's own code (upstream_error, upstream_timeout,
        upstream_unavailable, or rate_limit_exceeded when the last one was rate-limited), the attempts
        in the message, and Retry-After when waiting can help."""
        tried = ", ".join(f"{a.route}:{a.result}" for a in state.attempts)
        probe_in = min((b.breaker.seconds_until_probe() for b in self.backends.values()), default=0.0)
        if last is None:
            return UpstreamUnavailable(f"no route available: every circuit breaker is open ({tried})",
                                       backend="*", retry_after=max(probe_in, 1.0))
        message = f"{last.message} (attempts: {tried})"
        if last.status == 429:
            return UpstreamError(message, backend=last.backend, status=429,
                                 retry_after=last.retry_after if last.retry_after is not None else max(probe_in, 1.0))
        if last.upstream_status == 503 and last.blame is not Blame.CONFIG:  # the upstream said: later
            return UpstreamUnavailable(message, backend=last.backend,
                                       retry_after=last.retry_after if last.retry_after is not None
                                       else max(probe_in, 1.0))
        kind = type(last) if isinstance(last, (UpstreamTimeout, UpstreamUnavailable)) else UpstreamError
        own = last.code if last.blame is Blame.CONFIG else None  # upstream_misconfigured: the operator's to fix
        return kind(message, backend=last.backend, retry_after=probe_in or None, code=own, blame=last.blame)

    async def readiness(self) -> dict[str, Any]:
        names = list(self.backends)
        reachable = await asyncio.gather(*(self.backends[n].upstream.probe() for n in names))
        out: dict[str, Any] = {}
        for name, ok in zip(names, reachable, strict=True):
            backend = self.backends[name]
            info: dict[str, Any] = {
                "reachable": ok, "breaker": backend.breaker.state.value,
                "consecutive_failures": backend.breaker.consecutive_failures, "in_flight": backend.load.in_flight,
                "model": backend.upstream.adapter.model, "api_base": backend.upstream.adapter.api_base,
                "accepting": backend.accepting, "trial_in_flight": backend.breaker.trial_in_flight,
                "pool_full": backend.pool_full,
            }
            if backend.config_error is not None:
                info["config_error"] = backend.config_error
            if backend.admission.max_concurrent is not None:
                info["admission"] = backend.admission.describe()
            if isinstance(backend.upstream, ReplicaSet):
                info["replicas"] = backend.upstream.describe()
            spill = self.spill.describe(name)
            if spill is not None:
                info["spill"] = spill
            out[name] = info
        return out
