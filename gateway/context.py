"""Per-request state and the x-qroute-* / x-request-id headers every answer carries."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from gateway.auth import presented_key

if TYPE_CHECKING:
    from gateway.pipeline import ChatOutcome
    from gateway.routing import RouteDecision

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class RequestState:
    """What the pipeline needs from the HTTP request, and what it learns that an error answer
    must still carry (the route and score)."""

    request_id: str
    client_key: str | None = None
    rag_header: str | None = None
    decision: RouteDecision | None = None


def request_state(request: Request) -> RequestState:
    state = getattr(request.state, "qroute", None)
    if state is None:
        given = request.headers.get("x-request-id", "")
        state = RequestState(given if _SAFE_ID.match(given) else uuid.uuid4().hex,
                             client_key=presented_key(request), rag_header=request.headers.get("x-qroute-rag"))
        request.state.qroute = state
    return state


def headers_for(state: RequestState, outcome: ChatOutcome | None, started: float | None) -> dict[str, str]:
    headers = {"x-request-id": state.request_id}
    decision = outcome.decision if outcome else state.decision
    if decision is not None:
        headers["x-qroute-score"] = f"{decision.score:.4f}"
        headers["x-qroute-reason"] = decision.reason
    if outcome is None:
        headers["x-qroute-route"] = decision.route if decision else "none"
        return headers
    headers["x-qroute-route"] = outcome.route
    headers["x-qroute-model"] = outcome.model
    headers["x-qroute-attempts"] = ",".join(outcome.attempts)
    if outcome.cost is not None:
        headers["x-qroute-cost-cny"] = f"{outcome.cost:.8f}"
    if outcome.grounding is not None:
        headers["x-qroute-sources"] = outcome.grounding.header()
        headers["x-qroute-retrieval-ms"] = f"{outcome.grounding.retrieval_ms:.2f}"
    if started is not None:
        own = time.perf_counter() - started - outcome.upstream_s
        headers["x-qroute-overhead-ms"] = f"{max(own, 0.0) * 1000:.3f}"
    return headers
