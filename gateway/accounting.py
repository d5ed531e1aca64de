"""A streamed answer's bookkeeping: priced when its usage chunk arrives (or estimated when none
comes), its backend settled when it ends, its record finished after the last byte; and the small
helpers that read an answer's text and write its cost into `usage`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.backends import Backend
from gateway.context import RequestState
from gateway.cost import TokenUsage
from gateway.errors import Blame, GatewayError
from gateway.upstreams.load import Occupancy
from textkit.tokens import approx_tokens

Price = Callable[[RequestState, Backend, Occupancy, TokenUsage | None], None]
Finish = Callable[[RequestState, str], None]


@dataclass
class StreamAccount:
    """Prices a stream when its usage chunk arrives, and finishes its record when it ends."""

    price: Price
    finish: Finish
    state: RequestState
    backend: Backend
    occupancy: Occupancy
    prompt: Callable[[], str]  # the prompt's text, for a token estimate when no usage came
    priced: bool = False
    ended: tuple[int, GatewayError | None, bool] | None = None

    @property
    def capturing(self) -> bool:
        """Keep the answer's text? Only for a request picked for shadow labelling."""
        return self.state.shadow_data is not None

    def collect(self, payload: bytes) -> None:
        chunk = orjson.loads(payload)
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if isinstance(text, str) and choice.get("index", 0) == 0:
                self.state.answer_text = (self.state.answer_text or "") + text

    def usage(self, usage: dict[str, Any]) -> float | None:
        """The upstream's usage chunk: price the stream now (the cost goes into that chunk)."""
        self.state.last_token_s = self.state.elapsed()
        self.price(self.state, self.backend, self.occupancy, TokenUsage.from_openai(usage))
        self.priced = True
        return self.state.cost_cny

    def done(self, tokens_seen: int, error: GatewayError | None, disconnected: bool) -> None:
        """The stream ended: settle the backend now (breaker, its load); record it in `account`."""
        state = self.state
        if not self.priced:  # broken, cancelled, or an upstream that sent no usage: count ourselves
            state.last_token_s = state.elapsed()
            prompt = round(approx_tokens(self.prompt()))
            self.price(state, self.backend, self.occupancy, TokenUsage(prompt, tokens_seen, estimated=True))
        if error is not None and getattr(error, "blame", None) is not Blame.REQUEST:
            self.backend.breaker.record_failure()  # a stream the upstream broke; not one it refused mid-way
        self.ended = (tokens_seen, error, disconnected)

    def account(self) -> None:
        """After the last byte: the request goes into the metrics."""
        if self.ended is None:  # the response never ran its stream: it was cancelled before
            self.done(0, None, True)
        assert self.ended is not None
        _, error, disconnected = self.ended
        self.finish(self.state, "cancelled" if disconnected else "stream_error" if error else "ok")


def answer_text(result: dict[str, Any]) -> str:
    """The first choice's text (tool calls as their JSON), for shadow judging."""
    choices = result.get("choices") or [{}]
    message = choices[0].get("message") or {}
    if message.get("content"):
        return str(message["content"])
    calls = message.get("tool_calls")
    return orjson.dumps(calls).decode() if calls else ""


def attach_cost(result: dict[str, Any], cost: float | None) -> None:
    """`usage.qroute_cost_cny` on the answer, as OpenRouter-style gateways put cost in usage."""
    usage = result.get("usage")
    if cost is not None and isinstance(usage, dict):
        usage["qroute_cost_cny"] = round(cost, 8)
