"""Reading a request body: the size limit (declared or streamed), JSON, its depth, and the wire models.

Work that grows with the body (parsing, validating thousands of messages) runs in a worker thread
for bodies over `server.offload_body_bytes`, so one big request does not stall every other
request's event loop; smaller bodies are parsed in place (a thread hop costs more than they do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request

from gateway.api.input_limits import InputLimits, check_depth, check_message_count, too_deep
from gateway.api.parts import check_message_parts
from gateway.auth import check_key
from gateway.context import RequestState, request_state
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.passthrough import COMPLETION_FIELDS, check_extras
from gateway.protocol import ChatCompletionRequest, CompletionRequest

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
_chat_adapter = TypeAdapter(ChatCompletionRequest)
_completion_adapter = TypeAdapter(CompletionRequest)
_CHAT_FIELDS = frozenset(ChatCompletionRequest.model_fields)
# The legacy API's OpenAI fields the model does not declare (forwarded to vLLM as they are).
_COMPLETION_FIELDS = frozenset(CompletionRequest.model_fields) | COMPLETION_FIELDS


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


def json_object(raw: bytes, max_depth: int = InputLimits.max_depth) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if any(word in str(exc).lower() for word in ("depth", "recursion")):  # orjson's own limit (1,024)
            raise too_deep(max_depth) from None
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}",
                             code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    check_depth(data, max_depth)
    return data


def param_path(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as OpenAI writes a param: `messages[0].role`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate(adapter: TypeAdapter[M], data: dict[str, Any]) -> M:
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = param_path(first["loc"]) or None
        raise InvalidRequest(f"Invalid value for '{param}': {first['msg']}", param=param) from None


async def off_loop(work: Callable[[bytes, InputLimits], T], raw: bytes, limits: InputLimits) -> T:
    """Run `work` in a worker thread when the body is big, else here."""
    if len(raw) > limits.offload_bytes:
        return await asyncio.to_thread(work, raw, limits)
    return work(raw, limits)


def chat_request(raw: bytes, limits: InputLimits) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """Validate the body; return the model and the raw dict (what is forwarded upstream): strict
    types make the two agree, and unknown fields are checked against the pass-through lists."""
    data = json_object(raw, limits.max_depth)
    check_message_count(data, limits.max_messages)
    chat = validate(_chat_adapter, data)
    check_message_parts(data["messages"])
    check_extras(data, _CHAT_FIELDS, limits.extras)
    return chat, data


def completion_request(raw: bytes, limits: InputLimits) -> tuple[CompletionRequest, dict[str, Any]]:
    data = json_object(raw, limits.max_depth)
    completion = validate(_completion_adapter, data)
    check_extras(data, _COMPLETION_FIELDS, limits.extras)
    return completion, data


async def parse_chat_request(raw: bytes, limits: InputLimits) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    return await off_loop(chat_request, raw, limits)


async def parse_completion_request(raw: bytes, limits: InputLimits) -> tuple[CompletionRequest, dict[str, Any]]:
    return await off_loop(completion_request, raw, limits)


async def parse_json_object(raw: bytes, limits: InputLimits) -> dict[str, Any]:
    """Just the JSON object, depth-checked (the Responses and embeddings APIs validate their own)."""
    return await off_loop(lambda r, lim: json_object(r, lim.max_depth), raw, limits)


async def admitted_body(request: Request) -> tuple[RequestState, bytes]:
    """What every generation endpoint does first: count it as a generation request, check the client
    key (401), read the body within the limit (413), and note whether it is big enough to parse off
    the event loop."""
    state = request_state(request)
    state.chat = True
    check_key(request, request.app.state.client_keys)
    raw = await read_body(request, request.app.state.gateway.settings.server.max_body_bytes)
    state.large_body = len(raw) > request.app.state.input_limits.offload_bytes
    return state, raw
