"""Reading a request body: the size limit (declared or streamed), JSON, and the wire models."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.requests import Request

from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.protocol import ChatCompletionRequest, CompletionRequest

M = TypeVar("M", bound=BaseModel)
_chat_adapter = TypeAdapter(ChatCompletionRequest)
_completion_adapter = TypeAdapter(CompletionRequest)


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


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}",
                             code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
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


def parse_chat_request(raw: bytes) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """Validate the body; return the model and the raw dict (what is forwarded upstream)."""
    data = json_object(raw)
    return validate(_chat_adapter, data), data


def parse_completion_request(raw: bytes) -> tuple[CompletionRequest, dict[str, Any]]:
    data = json_object(raw)
    return validate(_completion_adapter, data), data
