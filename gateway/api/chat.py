"""POST /v1/chat/completions: authenticate, parse, hand to the pipeline, render."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.api.body import admitted_body, parse_chat_request
from gateway.context import headers_for
from gateway.disconnect import unless_client_leaves
from gateway.streaming import JSONAnswer, SSEResponse

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    state, raw = await admitted_body(request)
    gateway = request.app.state.gateway
    chat, data = await parse_chat_request(raw, request.app.state.input_limits)
    outcome = await unless_client_leaves(request, gateway.handle_chat(chat, data, state))
    headers = headers_for(state, outcome)
    if outcome.frames is not None:
        return SSEResponse(outcome.frames, headers, after=outcome.account)
    body = outcome.result
    if outcome.grounding is not None:
        body = {**body, "qroute": outcome.grounding.info().model_dump()}
    return JSONAnswer(orjson.dumps(body), headers, after=outcome.account)
