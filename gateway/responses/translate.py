"""Responses request -> chat completion request, and chat completion -> response object.

The chat request is what a chat client would have sent, so the pipeline treats both APIs alike:
instructions become the first system message, input items become messages (function calls join
the assistant message before them, their outputs become `tool` messages, reasoning items are
dropped), `reasoning.effort` becomes the thinking switch with chat's own mapping, `text.format`
becomes `response_format` and `max_output_tokens` becomes `max_tokens`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from gateway.api.body import validate
from gateway.cost import TokenUsage
from gateway.errors import InvalidRequest
from gateway.protocol import ChatCompletionRequest
from gateway.rag import Grounding
from gateway.responses.protocol import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionChoice,
    InputImage,
    InputItem,
    MessageItem,
    ParsedRequest,
    Refusal,
    parse_items,
)
from gateway.upstreams.thinking import requested_thinking

_chat_adapter = TypeAdapter(ChatCompletionRequest)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class ResponseDraft:
    """The response object's fields known before the answer: its id and the request echoed back."""

    id: str
    created_at: int
    model: str
    echo: dict[str, Any]

    def build(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None = None,
              error: dict[str, Any] | None = None, incomplete: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "object": "response", "created_at": self.created_at,
                                "status": status, "model": self.model, "output": output, "usage": usage,
                                "error": error, "incomplete_details": incomplete, **self.echo}
        if status in ("completed", "incomplete"):
            body["completed_at"] = int(time.time())
        return body


@dataclass
class ChatCall:
    """What to hand the pipeline, and what to remember for the answer and the store."""

    chat: ChatCompletionRequest
    data: dict[str, Any]
    draft: ResponseDraft
    conversation: list[dict[str, Any]] = field(default_factory=list)  # every input item, earlier turns first


def to_chat(parsed: ParsedRequest, history: dict[str, Any] | None) -> ChatCall:
    """`history` is the stored record of `previous_response_id`: its input, then its output, go first."""
    request = parsed.request
    earlier: list[dict[str, Any]] = []
    if history is not None:
        earlier = [*history.get("input", []), *history["response"].get("output", [])]
    items = [*parse_items(earlier, "previous_response_id"), *parsed.items]
    messages = chat_messages(request.instructions, items)
    if not messages:
        raise InvalidRequest("'input' is empty: send at least one message.", param="input")
    data: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    if request.stream:
        data["stream_options"] = {"include_usage": True}  # usage goes into response.completed
    for source, target in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                           ("top_p", "top_p"), ("parallel_tool_calls", "parallel_tool_calls"),
                           ("user", "user"), ("rag", "rag")):
        value = getattr(request, source)
        if value is not None:
            data[target] = value
    if parsed.tools:
        data["tools"] = [{"type": "function", "function": tool.model_dump(
            include={"name", "description", "parameters", "strict"}, exclude_none=True)} for tool in parsed.tools]
    choice = parsed.tool_choice
    if choice is not None:
        data["tool_choice"] = choice if isinstance(choice, str) else {"type": "function",
                                                                      "function": {"name": choice.name}}
    effort = request.reasoning.effort if request.reasoning is not None else None
    if effort is not None:
        data["enable_thinking"] = requested_thinking({"reasoning_effort": effort})
    fmt = request.text.format if request.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        data["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        schema = {"name": fmt.name, "schema": fmt.json_schema, "strict": fmt.strict, "description": fmt.description}
        data["response_format"] = {"type": "json_schema",
                                   "json_schema": {k: v for k, v in schema.items() if v is not None}}
    conversation = [*earlier, *(_dump(item) for item in parsed.items)]
    return ChatCall(validate(_chat_adapter, data), data, _draft(parsed), conversation)


def _draft(parsed: ParsedRequest) -> ResponseDraft:
    request = parsed.request
    choice = parsed.tool_choice
    reasoning = None
    if request.reasoning is not None:
        reasoning = {"effort": request.reasoning.effort,
                     "summary": request.reasoning.summary or request.reasoning.generate_summary}
    fmt = request.text.format if request.text is not None else None
    text: dict[str, Any] = {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}}
    if request.text is not None and request.text.verbosity is not None:
        text["verbosity"] = request.text.verbosity
    echo = {
        "instructions": request.instructions,
        "tools": [tool.model_dump(include={"type", "name", "description", "parameters", "strict"})
                  for tool in parsed.tools],
        "tool_choice": choice.model_dump() if isinstance(choice, FunctionChoice) else (choice or "auto"),
        "parallel_tool_calls": request.parallel_tool_calls if request.parallel_tool_calls is not None else True,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_output_tokens": request.max_output_tokens,
        "previous_response_id": request.previous_response_id,
        "reasoning": reasoning,
        "text": text,
        "metadata": request.metadata or {},
        "user": request.user,
        "store": request.store,
        "background": False,
        "truncation": "disabled",
    }
    return ResponseDraft(new_id("resp"), int(time.time()), request.model, echo)


def _dump(item: InputItem) -> dict[str, Any]:
    dumped: dict[str, Any] = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


# --- input items -> chat messages -----------------------------------------------------------
def chat_messages(instructions: str | None, items: list[InputItem]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if isinstance(item, MessageItem):
            # Qwen3's chat template knows no `developer` role; OpenAI treats it as the system's.
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": _content(item.content, role)})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # the same turn: text, then its calls
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else _content(item.output, "tool")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
    return messages


def _content(content: str | list[ContentPart], role: str) -> str | list[dict[str, Any]]:
    """Text-only content becomes a string (every backend's template takes one); images need parts."""
    if isinstance(content, str):
        return content
    if not any(isinstance(part, InputImage) for part in content):
        return "\n".join(_text(part) for part in content)
    if role != "user":
        raise InvalidRequest(f"Images are only supported in user messages, not in {role!r} ones.", param="input")
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, InputImage):
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail in ("low", "high", "auto"):
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": _text(part)})
    return parts


def _text(part: ContentPart) -> str:
    if isinstance(part, Refusal):
        return part.refusal
    return "" if isinstance(part, InputImage) else part.text


# --- chat completion -> response ------------------------------------------------------------
def status_of(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def to_response(draft: ResponseDraft, result: dict[str, Any], grounding: Grounding | None) -> dict[str, Any]:
    """A non-streamed chat completion as a response object: reasoning, message, then calls."""
    choices = result.get("choices") or [{}]
    message = choices[0].get("message") or {}
    status, incomplete = status_of(choices[0].get("finish_reason"))
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(new_id("rs"), reasoning))
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if content or not calls:
        text = content if isinstance(content, str) else ""
        output.append(message_item(new_id("msg"), text, "incomplete" if incomplete else "completed"))
    for call in calls:
        function = call.get("function") or {}
        output.append(function_call_item(new_id("fc"), call.get("id") or new_id("call"), function.get("name", ""),
                                         function.get("arguments") or "", "completed"))
    response = draft.build(status, output, response_usage(result.get("usage")), incomplete=incomplete)
    if grounding is not None:
        response["qroute"] = grounding.info().model_dump()
    return response


def response_usage(usage: Any) -> dict[str, Any] | None:
    """Chat usage in the Responses API's names; qroute's `qroute_cost_cny` is kept."""
    tokens = TokenUsage.from_openai(usage)
    if tokens is None:
        return None
    out = usage_of(tokens)
    cost = usage.get("qroute_cost_cny")
    if cost is not None:
        out["qroute_cost_cny"] = cost
    return out


def usage_of(tokens: TokenUsage) -> dict[str, Any]:
    return {
        "input_tokens": tokens.prompt,
        "input_tokens_details": {"cached_tokens": tokens.cached_prompt, "cache_write_tokens": 0},
        "output_tokens": tokens.completion,
        "output_tokens_details": {"reasoning_tokens": tokens.reasoning},
        "total_tokens": tokens.prompt + tokens.completion,
    }


def record(response: dict[str, Any], conversation: list[dict[str, Any]], owner: str | None) -> dict[str, Any]:
    """What the store keeps: the response, the whole conversation it answered, and its owner."""
    return {"response": response, "input": conversation, "owner": owner}
