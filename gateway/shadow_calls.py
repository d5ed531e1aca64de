"""What shadow labelling asks of the gateway (gateway.shadow.ShadowHost): the same request answered
on another route, and a judge's reply, both off the request path and never at a client's expense.

A shadow answer takes a backend slot only when one is free now and another stays free for clients
(so a backend with max_concurrent 1 is never shadowed): it never waits in an admission queue, never
goes to a backend whose breaker is open, and is not counted as a client request."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.accounting import answer_text
from gateway.backends import Backend
from gateway.context import RequestState
from gateway.cost import CostModel, TokenUsage
from gateway.protocol import ChatCompletionRequest
from gateway.settings import Settings, env_secret
from gateway.shadow import ShadowAnswer, ShadowSkipped
from router.routes import CLOUD, Route

Call = Callable[[Backend, ChatCompletionRequest, dict[str, Any], bool, RequestState],
                Awaitable[tuple[dict[str, Any] | None, Any]]]


class ShadowCalls:
    def __init__(self, settings: Settings, backends: dict[str, Backend], costs: CostModel, call: Call) -> None:
        self.settings = settings
        self.backends = backends
        self.costs = costs
        self._call = call
        self._judge_client: Any = None

    async def shadow_answer(self, route: Route, data: dict[str, Any]) -> ShadowAnswer:
        backend = self.backends[self.settings.routes[route].backend]
        if not backend.admission.try_acquire(headroom=1):
            raise ShadowSkipped(f"{backend.name} has no free slot")
        granted = backend.breaker.enter()
        if granted is None:
            backend.admission.release(0.0)
            raise ShadowSkipped(f"{backend.name}'s breaker is open")
        occupancy = backend.load.enter()
        started = time.perf_counter()
        try:
            request = ChatCompletionRequest.model_validate({**data, "model": route, "stream": False})
            thinking = self.settings.routes[route].thinking
            result, _ = await self._call(backend, request, {**data, "stream": False}, thinking,
                                         RequestState(request_id=uuid.uuid4().hex))
        except BaseException:
            backend.admission.release(0.0)
            backend.load.leave(occupancy)
            raise
        finally:
            backend.breaker.end(granted)  # a shadow call charges no breaker, but never holds its trial
        busy_s, concurrency = backend.load.leave(occupancy)
        backend.admission.release(busy_s)
        assert result is not None
        model = backend.upstream.adapter.model
        cost = self.costs.cost(backend.name, model, TokenUsage.from_openai(result.get("usage")),
                               time.perf_counter() - started, concurrency)
        return ShadowAnswer(answer_text(result), model, cost or 0.0)

    async def judge_reply(self, messages: list[dict[str, str]]) -> tuple[str, float]:
        if self.settings.router.shadow.judge.kind == "endpoint":
            return await self._endpoint_judge(messages), 0.0
        answer = await self.shadow_answer(CLOUD, {"messages": messages, "temperature": 0})
        return answer.text, answer.cost_cny

    async def _endpoint_judge(self, messages: list[dict[str, str]]) -> str:
        import httpx

        judge = self.settings.router.shadow.judge
        if self._judge_client is None:
            key = env_secret(judge.api_key_env) if judge.api_key_env else None
            self._judge_client = httpx.AsyncClient(base_url=str(judge.base_url).rstrip("/"), timeout=judge.timeout_s,
                                                   headers={"authorization": f"Bearer {key}"} if key else {})
        resp = await self._judge_client.post("/chat/completions", json={"model": judge.model, "messages": messages,
                                                                         "temperature": 0})
        resp.raise_for_status()
        return answer_text(resp.json())

    async def close(self) -> None:
        if self._judge_client is not None:
            await self._judge_client.aclose()
