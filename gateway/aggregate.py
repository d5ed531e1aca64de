"""Assemble a streamed answer into one chat.completion (for DashScope calls with thinking on,
which DashScope only allows streaming)."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

import orjson

from gateway.protocol import AssistantMessage, ChatCompletion, Choice, FunctionCall, ToolCall, Usage
from gateway.upstreams.thinking import normalize_reasoning


async def assemble(payloads: AsyncIterable[bytes]) -> dict[str, Any]:
    content: list[str] = []
    reasoning: list[str] = []
    calls: dict[int, ToolCall] = {}
    head: dict[str, Any] = {}
    finish: str | None = None
    usage: dict[str, Any] | None = None
    async for payload in payloads:
        chunk = orjson.loads(payload)
        head = head or {k: chunk.get(k) for k in ("id", "created", "model")}
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            normalize_reasoning(delta)
            if delta.get("content"):
                content.append(delta["content"])
            if delta.get("reasoning_content"):
                reasoning.append(delta["reasoning_content"])
            for part in delta.get("tool_calls") or []:
                call = calls.setdefault(part.get("index", 0), ToolCall())
                call.id = part.get("id") or call.id
                fn = part.get("function") or {}
                call.function = FunctionCall(name=call.function.name + (fn.get("name") or ""),
                                             arguments=call.function.arguments + (fn.get("arguments") or ""))
            finish = choice.get("finish_reason") or finish
    message = AssistantMessage(
        content="".join(content) if content or not calls else None,
        reasoning_content="".join(reasoning) if reasoning else None,
        tool_calls=[calls[i] for i in sorted(calls)] or None,
    )
    completion = ChatCompletion(**head, choices=[Choice(message=message, finish_reason=finish)],
                                usage=Usage.model_validate(usage) if usage else None)
    return completion.model_dump()
