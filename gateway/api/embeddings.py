"""POST /v1/embeddings: authenticate, read, parse, hand to the embeddings service, render."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import TypeAdapter
from starlette.responses import Response

from gateway.api.body import parse_json_object, read_body, validate
from gateway.auth import check_key
from gateway.context import request_state
from gateway.embeddings import EmbeddingsRequest, EmbeddingsService

router = APIRouter()
_request = TypeAdapter(EmbeddingsRequest)


@router.post("/v1/embeddings")
async def create_embeddings(request: Request) -> Response:
    state = request_state(request)
    service: EmbeddingsService = request.app.state.embeddings
    with service.recording() as record:
        check_key(request, request.app.state.client_keys)
        raw = await read_body(request, request.app.state.gateway.settings.server.max_body_bytes)
        data = await parse_json_object(raw, request.app.state.input_limits)
        answer = await service.embed(validate(_request, data), record)
    headers = {"x-request-id": state.request_id, "x-qroute-model": answer.model}
    return Response(answer.body, media_type="application/json", headers=headers)
