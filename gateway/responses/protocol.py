"""Responses API wire models for the requests qroute accepts.

Known fields are validated so a bad value is a 400 naming the param (`input[2].call_id`,
`tools[0].type`), never an upstream 500. Input items and tools are validated one by one rather
than as one big union: pydantic's union errors name union members, not the client's params.
Fields qroute does not act on (`include`, `truncation`, `service_tier`, ...) are accepted and
ignored, as SDKs and agent frameworks send them by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from gateway.api.body import param_path
from gateway.errors import InvalidRequest

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
SummaryMode = Literal["auto", "concise", "detailed"]


# --- input items ----------------------------------------------------------------------------
class InputText(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["input_text"]
    text: str


class OutputText(BaseModel):
    model_config = ConfigDict(extra="allow")  # annotations, logprobs
    type: Literal["output_text"]
    text: str


class Refusal(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["refusal"]
    refusal: str


class InputImage(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["low", "high", "auto", "original"] | None = None

    @model_validator(mode="after")
    def _url_only(self) -> InputImage:
        if self.image_url is None:
            raise ValueError("an image needs `image_url` (a URL or a data: URL); `file_id` is not supported")
        return self


ContentPart = Annotated[InputText | OutputText | Refusal | InputImage, Field(discriminator="type")]


class MessageItem(BaseModel):
    """`{role, content}`; `type: "message"` is optional, as in OpenAI's easy input message."""

    model_config = ConfigDict(extra="allow")  # id, status, phase of replayed output messages
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]


class ReasoningItem(BaseModel):
    """Accepted so a replayed conversation validates; never sent upstream."""

    model_config = ConfigDict(extra="allow")
    type: Literal["reasoning"]


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem
_ITEMS: dict[str, TypeAdapter[Any]] = {
    "message": TypeAdapter(MessageItem),
    "function_call": TypeAdapter(FunctionCallItem),
    "function_call_output": TypeAdapter(FunctionCallOutputItem),
    "reasoning": TypeAdapter(ReasoningItem),
}


# --- tools, formats, reasoning ------------------------------------------------------------
class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionChoice(BaseModel):
    type: Literal["function"]
    name: str = Field(min_length=1)


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _schema_needs_name(self) -> TextFormat:
        if self.type == "json_schema" and (not self.name or self.json_schema is None):
            raise ValueError("a json_schema format needs `name` and `schema`")
        return self


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    effort: Effort | None = None
    summary: SummaryMode | None = None
    generate_summary: SummaryMode | None = None


class ResponsesRequest(BaseModel):
    """The body of POST /v1/responses. `input` and `tools` are checked item by item afterwards."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = Field(None, min_length=1)
    metadata: dict[str, str] | None = Field(None, max_length=16)
    user: str | None = None
    rag: bool | None = None  # qroute: ground the answer in the company index
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None


_request_adapter = TypeAdapter(ResponsesRequest)


@dataclass
class ParsedRequest:
    """The validated request, with its input as typed items (a string input is one user message)."""

    request: ResponsesRequest
    items: list[InputItem]
    tools: list[FunctionTool]
    tool_choice: str | FunctionChoice | None


def parse_request(data: dict[str, Any]) -> ParsedRequest:
    request: ResponsesRequest = _checked(_request_adapter, data, ())
    _unsupported(request)
    raw = request.input
    if raw is None:
        items: list[InputItem] = []
    elif isinstance(raw, str):
        items = [MessageItem(role="user", content=raw)]
    else:
        items = parse_items(raw, "input")
    tools = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(request.tools or [])]
    return ParsedRequest(request, items, tools, _tool_choice(request.tool_choice))


def parse_items(raw: list[Any], where: str) -> list[InputItem]:
    """Typed input items; a 400 naming `input[i]...` for the first bad one."""
    items: list[InputItem] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest(f"Invalid value for '{where}[{i}]': an input item must be an object.",
                                 param=f"{where}[{i}]")
        kind = item.get("type", "message")
        adapter = _ITEMS.get(kind) if isinstance(kind, str) else None
        if adapter is None:
            raise InvalidRequest(f"Input items of type {kind!r} are not supported by qroute: use message, "
                                 "function_call, function_call_output or reasoning items.",
                                 param=f"{where}[{i}].type", code="unsupported_value")
        items.append(_checked(adapter, item, (where, i)))
    return items


def _checked(adapter: TypeAdapter[Any], value: Any, at: tuple[Any, ...]) -> Any:
    """Validate; on failure a 400 for the deepest error (the most specific one when a union
    such as `str | list[part]` failed every way), named as the client wrote it."""
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        worst = max(exc.errors(), key=lambda e: len(e["loc"]))
        param = param_path((*at, *_client_loc(worst["loc"])))
        raise InvalidRequest(f"Invalid value for '{param}': {worst['msg']}", param=param) from None


_MEMBER = re.compile(r"^(str|int|float|bool|none|dict|list)$|\[")
_PART_TAGS = frozenset({"input_text", "output_text", "refusal", "input_image"})


def _client_loc(loc: tuple[Any, ...]) -> list[Any]:
    """pydantic's location without the union members it inserts (`str`, `list[...]`, part tags)."""
    out: list[Any] = []
    for part in loc:
        tag = part in _PART_TAGS and bool(out) and isinstance(out[-1], int)
        if isinstance(part, str) and (_MEMBER.search(part) or tag):
            continue
        out.append(part)
    return out


_tool_adapter = TypeAdapter(FunctionTool)
_choice_adapter = TypeAdapter(FunctionChoice)


def _tool(tool: Any, where: str) -> FunctionTool:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if isinstance(kind, str) and kind != "function":
        raise InvalidRequest(f"The tool type {kind!r} is not supported by qroute: only function tools are.",
                             param=f"{where}.type", code="unsupported_value")
    result: FunctionTool = _checked(_tool_adapter, tool, (where,))
    return result


def _tool_choice(choice: str | dict[str, Any] | None) -> str | FunctionChoice | None:
    if not isinstance(choice, dict):
        return choice
    if choice.get("type") != "function":
        raise InvalidRequest(f"tool_choice of type {choice.get('type')!r} is not supported by qroute: use "
                             "'auto', 'none', 'required' or {'type': 'function', 'name': ...}.",
                             param="tool_choice", code="unsupported_value")
    result: FunctionChoice = _checked(_choice_adapter, choice, ("tool_choice",))
    return result


def _unsupported(request: ResponsesRequest) -> None:
    """Features a chat completion cannot carry: refused by name, never silently dropped."""
    for param, value in (("background", request.background), ("conversation", request.conversation),
                         ("prompt", request.prompt)):
        if value:
            raise InvalidRequest(f"'{param}' is not supported by qroute's Responses API.", param=param,
                                 code="unsupported_parameter")
