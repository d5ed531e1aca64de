"""POST /v1/chat/completions: read and check the request, call the pipeline, answer."""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.auth import check_key, presented_key
from gateway.context import headers_for, request_state
from gateway.errors import PayloadTooLarge
from gateway.protocol import parse_chat_request
from gateway.streaming import SSEResponse

router = APIRouter()


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {declared} bytes is over the {limit}-byte limit.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is over the {limit}-byte limit.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    state = request_state(request)
    gateway = request.app.state.gateway
    check_key(request, request.app.state.client_keys)
    raw = await read_body(request, gateway.settings.server.max_body_bytes)
    chat, data = parse_chat_request(raw)
    grounding = None
    if gateway.rag.wanted(chat.rag, request.headers.get("x-qroute-rag"), presented_key(request)):
        grounding = await gateway.rag.ground(data["messages"])
    outcome = await gateway.handle_chat(chat, data, state, grounding)
    headers = headers_for(state, outcome, started)
    if grounding is not None:
        headers["x-qroute-sources"] = grounding.header()
        headers["x-qroute-retrieval-ms"] = f"{grounding.retrieval_ms:.2f}"
    if outcome.frames is not None:
        return SSEResponse(outcome.frames, headers)
    if grounding is not None:
        outcome.result["qroute"] = {"sources": grounding.sources, "retrieval_ms": round(grounding.retrieval_ms, 2)}
    return Response(orjson.dumps(outcome.result), media_type="application/json", headers=headers)
