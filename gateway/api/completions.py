"""POST /v1/completions (the legacy text-completion API, which llama-index's OpenAILike and older
clients call): authenticate, parse, hand to the pipeline, render, as chat does."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.body import admitted_body, parse_completion_request
from gateway.context import headers_for
from gateway.disconnect import unless_client_leaves
from gateway.streaming import JSONAnswer, SSEResponse

router = APIRouter()


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    state, raw = await admitted_body(request)
    gateway = request.app.state.gateway
    completion, data = await parse_completion_request(raw, request.app.state.input_limits)
    outcome = await unless_client_leaves(request, gateway.handle_completion(completion, data, state))
    headers = headers_for(state, outcome)
    if outcome.frames is not None:
        return SSEResponse(outcome.frames, headers, after=outcome.account)
    return JSONAnswer(orjson.dumps(outcome.result), headers, after=outcome.account)
