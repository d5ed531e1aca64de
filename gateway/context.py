"""Per-request state, and the x-qroute-* / x-request-id headers every answer carries.

`RequestState` is the request's record: what the HTTP layer knew (id, key, headers), and what the
pipeline learned as it went (decision, timings, attempts, the backend that answered, usage, cost).
It is finished exactly once, by whoever ends the request (pipeline, stream, or error handler), and
that is when the metrics are recorded.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from gateway.auth import presented_key

if TYPE_CHECKING:
    from gateway.cost import TokenUsage
    from gateway.limits import Ticket
    from gateway.pipeline import ChatOutcome
    from gateway.routing import RouteDecision
    from router.routes import Route

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True)
class Attempt:
    route: Route
    result: str  # "ok", the HTTP status the attempt failed with, or "circuit_open"


@dataclass(frozen=True)
class Served:
    """The attempt that answered."""

    route: Route
    backend: str
    model: str


@dataclass
class RequestState:
    request_id: str
    client_key: str | None = None
    rag_header: str | None = None
    started: float = field(default_factory=time.perf_counter)
    chat: bool = False  # a chat completion (counted in qroute_requests_total), not /v1/models etc.
    operation: str = "chat"  # gen_ai_operation_name: chat, or text_completion for /v1/completions
    decision: RouteDecision | None = None
    scoring_s: float = 0.0
    retrieval_s: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    upstream_s: float = 0.0  # time spent waiting on upstreams before the answer started
    overhead_s: float | None = None  # the gateway's own time until the answer started
    served: Served | None = None
    first_token_s: float | None = None  # since `started`, streams only
    last_token_s: float | None = None
    usage: TokenUsage | None = None
    cost_cny: float | None = None
    cloud_equivalent_cny: float | None = None
    cache_control: str | None = None  # the client's Cache-Control header
    priority_header: str | None = None  # x-qroute-priority (honoured for trusted keys only)
    cache: str | None = None  # "hit" or "miss" when the response cache applied
    ticket: Ticket | None = None  # what the per-key limits admitted; settled when the request ends
    priority: int = 0  # in a backend's admission queue: higher first
    shadow_data: dict[str, Any] | None = None  # picked for shadow labelling: the request as sent upstream
    answer_text: str | None = None  # the client's answer's text, kept only for shadow labelling
    finished: bool = False
    large_body: bool = False  # over server.offload_body_bytes: per-request work that grows with it runs in a thread

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def attempts_header(self) -> str:
        return ",".join(f"{a.route}:{a.result}" for a in self.attempts)


def request_state(request: Request) -> RequestState:
    state = getattr(request.state, "qroute", None)
    if state is None:
        given = request.headers.get("x-request-id", "")
        state = RequestState(given if _SAFE_ID.match(given) else uuid.uuid4().hex,
                             client_key=presented_key(request), rag_header=request.headers.get("x-qroute-rag"),
                             cache_control=request.headers.get("cache-control"),
                             priority_header=request.headers.get("x-qroute-priority"))
        request.state.qroute = state
    return state


def headers_for(state: RequestState, outcome: ChatOutcome | None = None) -> dict[str, str]:
    headers = {"x-request-id": state.request_id}
    decision = state.decision
    if decision is not None:
        headers["x-qroute-score"] = f"{decision.score:.4f}"
        headers["x-qroute-reason"] = decision.reason
    if state.attempts:
        headers["x-qroute-attempts"] = state.attempts_header()
    if state.cache is not None:
        headers["x-qroute-cache"] = state.cache
    served = state.served
    if served is None:
        headers["x-qroute-route"] = decision.route if decision else "none"
        return headers
    headers["x-qroute-route"] = served.route
    headers["x-qroute-model"] = served.model
    if state.cost_cny is not None and outcome is not None and outcome.frames is None:
        headers["x-qroute-cost-cny"] = f"{state.cost_cny:.8f}"
    if outcome is not None and outcome.grounding is not None:
        headers["x-qroute-sources"] = outcome.grounding.header()
        headers["x-qroute-retrieval-ms"] = f"{outcome.grounding.retrieval_ms:.2f}"
    if state.overhead_s is not None:
        headers["x-qroute-overhead-ms"] = f"{max(state.overhead_s, 0.0) * 1000:.3f}"
    return headers
