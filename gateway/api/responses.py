"""POST /v1/responses (and GET/DELETE of a stored one): authenticate, parse, translate to a chat
request, hand it to the chat pipeline, render the answer as a response object or event stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from gateway.api.body import admitted_body, json_object, off_loop
from gateway.api.input_limits import InputLimits, check_message_count
from gateway.auth import check_key
from gateway.context import headers_for, request_state
from gateway.disconnect import unless_client_leaves
from gateway.responses.events import Keep, response_events
from gateway.responses.protocol import ParsedRequest, parse_request
from gateway.responses.store import (
    MemoryResponseStore,
    ResponseStore,
    SharedResponseStore,
    load_owned,
    owner_of,
)
from gateway.responses.translate import ChatCall, record, to_chat, to_response
from gateway.streaming import JSONAnswer, SSEResponse

router = APIRouter()


def response_store(app: FastAPI) -> ResponseStore:
    """The app's store, made on first use from `responses` in the settings."""
    store: ResponseStore | None = getattr(app.state, "responses_store", None)
    if store is None:
        gateway = app.state.gateway
        config = gateway.settings.responses
        local = MemoryResponseStore(config.max_stored, config.ttl_s)
        store = SharedResponseStore(gateway.redis, local) if gateway.redis.configured else local
        app.state.responses_store = store
    return store


def _once(account: Callable[[], None]) -> Callable[[], None]:
    """The request is accounted exactly once, however many ways its answer ends."""
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            account()
    return run


def _keeper(store: ResponseStore, call: ChatCall, owner: str | None) -> Keep:
    async def keep(response: dict[str, Any]) -> None:
        await store.put(response["id"], record(response, call.conversation, owner))
    return keep


def _parsed(raw: bytes, limits: InputLimits) -> ParsedRequest:
    data = json_object(raw, limits.max_depth)
    check_message_count(data, limits.max_messages, field="input")
    return parse_request(data)


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    state, raw = await admitted_body(request)
    gateway = request.app.state.gateway
    parsed = await off_loop(_parsed, raw, request.app.state.input_limits)
    store = response_store(request.app)
    owner = owner_of(state.client_key)
    previous = parsed.request.previous_response_id
    history = await load_owned(store, previous, owner, previous=True) if previous else None
    call = to_chat(parsed, history)
    outcome = await unless_client_leaves(request, gateway.handle_chat(call.chat, call.data, state))
    if state.served is not None:
        call.draft.model = state.served.model
    headers = headers_for(state, outcome)
    keep = _keeper(store, call, owner) if parsed.request.store else None
    account = _once(outcome.account)
    if outcome.frames is not None:
        return SSEResponse(response_events(outcome.frames, call.draft, state, keep), headers, after=account)
    assert outcome.result is not None
    body = to_response(call.draft, outcome.result, outcome.grounding)
    if keep is not None:
        await keep(body)
    return JSONAnswer(orjson.dumps(body), headers, after=account)


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request) -> Response:
    state = request_state(request)
    check_key(request, request.app.state.client_keys)
    found = await load_owned(response_store(request.app), response_id, owner_of(state.client_key))
    return Response(orjson.dumps(found["response"]), media_type="application/json",
                    headers={"x-request-id": state.request_id})


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> Response:
    state = request_state(request)
    check_key(request, request.app.state.client_keys)
    store = response_store(request.app)
    await load_owned(store, response_id, owner_of(state.client_key))
    await store.delete(response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json", headers={"x-request-id": state.request_id})
