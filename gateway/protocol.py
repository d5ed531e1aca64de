"""OpenAI wire models: the requests the gateway accepts and the bodies it builds itself.

Unknown top-level request fields are kept (extra="allow") and checked against each backend's
pass-through allow-list (gateway/passthrough.py), so vLLM or DashScope options such as `top_k` or
`repetition_penalty` still work; known fields are validated strictly (JSON types only: "false" is
not a boolean, "0.5" not a number) so what is forwarded is exactly what was validated, and a bad
value is a 400 naming the field, not an upstream 500. Parsing bytes into these models lives in
gateway/api/body.py; content parts are checked in gateway/api/parts.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
)

# What a content part may be, for the OpenAPI schema; gateway/api/parts.py validates them.
_URL = {"type": "object", "properties": {"url": {"type": "string", "minLength": 1}}, "required": ["url"]}
CONTENT_PART_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
     "required": ["type", "text"]},
    {"type": "object", "properties": {"type": {"const": "image_url"}, "image_url": _URL},
     "required": ["type", "image_url"]},
    {"type": "object", "properties": {"type": {"const": "input_audio"}, "input_audio": {
        "type": "object", "properties": {"data": {"type": "string"}, "format": {"type": "string"}},
        "required": ["data", "format"]}}, "required": ["type", "input_audio"]},
    {"type": "object", "properties": {"type": {"const": "file"}, "file": {"type": "object"}},
     "required": ["type", "file"]},
    {"type": "object", "properties": {"type": {"const": "refusal"}, "refusal": {"type": "string"}},
     "required": ["type", "refusal"]},
]
_CONTENT_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"anyOf": CONTENT_PART_SCHEMAS}},
                             {"type": "null"}]}


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str | list[Any] | None, WithJsonSchema(_CONTENT_SCHEMA)] = None  # parts: api/parts.py
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "json_object", "json_schema"]


class ChatTemplateKwargs(BaseModel):
    """vLLM's chat template variables: passed through, but the thinking switch must be a real boolean."""

    model_config = ConfigDict(extra="allow", strict=True)
    enable_thinking: bool | None = None


class CacheOptions(BaseModel):
    """qroute's opt-out of the response cache (gateway/cache.py); never forwarded."""

    model_config = ConfigDict(extra="forbid", strict=True)
    no_cache: bool = Field(False, alias="no-cache")
    no_store: bool = Field(False, alias="no-store")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    # Every value the openai SDK sends; none/minimal turn Qwen3's thinking off, the others on.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    enable_thinking: bool | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None
    rag: bool | None = None  # qroute: ground the answer in the company index
    cache: CacheOptions | None = None  # qroute: {"no-cache": true} and/or {"no-store": true}

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v


class CompletionRequest(BaseModel):
    """The legacy POST /v1/completions, as vLLM serves it: passed through, fields validated."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=20)

    def prompt_text(self) -> str:
        """What the router scores: the prompt's text (token-id prompts have none)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(p for p in self.prompt if isinstance(p, str))


# --- responses --------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")  # completion_tokens_details and the like pass through
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class FunctionCall(BaseModel):
    name: str = ""
    arguments: str = ""


class ToolCall(BaseModel):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall = Field(default_factory=FunctionCall)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`content` is always sent (null with tool calls); reasoning and tool calls only when present."""
        data: dict[str, Any] = handler(self)
        for key in ("reasoning_content", "tool_calls"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str | None = None


class ChatCompletion(BaseModel):
    """What a non-streamed answer looks like when the gateway builds it (from a stream it
    assembled); answers passed through from an upstream keep the upstream's own fields."""

    id: str | None = None
    object: Literal["chat.completion"] = "chat.completion"
    created: int | None = None
    model: str | None = None
    choices: list[Choice]
    usage: Usage | None = None


class Source(BaseModel):
    id: int
    doc_id: str
    title: str = ""


class RetrievalInfo(BaseModel):
    """qroute's extension on grounded answers: `qroute.sources` and `qroute.retrieval_ms`."""

    sources: list[Source]
    retrieval_ms: float


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
