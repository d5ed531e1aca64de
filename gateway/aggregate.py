"""Assemble a streamed answer into one chat.completion (for DashScope calls with thinking on,
which DashScope only allows streaming). Every choice index is kept, so `n` > 1 works too."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.protocol import AssistantMessage, ChatCompletion, Choice, FunctionCall, ToolCall, Usage
from gateway.upstreams.thinking import normalize_reasoning


@dataclass
class _Parts:
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, ToolCall] = field(default_factory=dict)
    finish: str | None = None

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta") or {}
        normalize_reasoning(delta)
        if delta.get("content"):
            self.content.append(delta["content"])
        if delta.get("reasoning_content"):
            self.reasoning.append(delta["reasoning_content"])
        for part in delta.get("tool_calls") or []:
            call = self.calls.setdefault(part.get("index", 0), ToolCall())
            call.id = part.get("id") or call.id
            fn = part.get("function") or {}
            call.function = FunctionCall(name=call.function.name + (fn.get("name") or ""),
                                         arguments=call.function.arguments + (fn.get("arguments") or ""))
        self.finish = choice.get("finish_reason") or self.finish

    def choice(self, index: int) -> Choice:
        message = AssistantMessage(
            content="".join(self.content) if self.content or not self.calls else None,
            reasoning_content="".join(self.reasoning) if self.reasoning else None,
            tool_calls=[self.calls[i] for i in sorted(self.calls)] or None,
        )
        return Choice(index=index, message=message, finish_reason=self.finish)


async def assemble(payloads: AsyncIterable[bytes]) -> dict[str, Any]:
    choices: dict[int, _Parts] = {}
    head: dict[str, Any] = {}
    usage: dict[str, Any] | None = None
    async for payload in payloads:
        chunk = orjson.loads(payload)
        head = head or {k: chunk.get(k) for k in ("id", "created", "model")}
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            choices.setdefault(int(choice.get("index") or 0), _Parts()).add(choice)
    completion = ChatCompletion(**head, choices=[choices[i].choice(i) for i in sorted(choices)] or [_Parts().choice(0)],
                                usage=Usage.model_validate(usage) if usage else None)
    return completion.model_dump()
