"""Qwen3's thinking switch, read from the client in any of its dialects and written per backend.

Clients may say `reasoning_effort`, top-level `enable_thinking` or
`chat_template_kwargs.enable_thinking`. vLLM reads only `chat_template_kwargs`; DashScope only
top-level `enable_thinking` and refuses non-streaming calls with thinking on. Replies carry the
thinking as `reasoning_content` whichever field the backend used (vLLM >= 0.11: `reasoning`).
"""

from __future__ import annotations

from typing import Any

import orjson

THINKING_FIELDS = ("enable_thinking", "reasoning_effort")
_EFFORT_OFF = ("none", "minimal")


def requested_thinking(data: dict[str, Any]) -> bool | None:
    """The client's explicit choice, or None when it expressed none (the route decides)."""
    if data.get("enable_thinking") is not None:
        return bool(data["enable_thinking"])
    kwargs = data.get("chat_template_kwargs") or {}
    if kwargs.get("enable_thinking") is not None:
        return bool(kwargs["enable_thinking"])
    effort = data.get("reasoning_effort")
    if effort is not None:
        return effort not in _EFFORT_OFF
    return None


def apply_thinking(body: dict[str, Any], provider: str, thinking: bool) -> None:
    """Write the switch where this provider reads it, and nowhere else."""
    for name in THINKING_FIELDS:
        body.pop(name, None)
    kwargs = dict(body.pop("chat_template_kwargs", None) or {})
    kwargs.pop("enable_thinking", None)
    if provider == "hosted_vllm":
        kwargs["enable_thinking"] = thinking
    elif provider == "dashscope":
        body["enable_thinking"] = thinking
    elif thinking:
        body["reasoning_effort"] = "medium"
    if kwargs:
        body["chat_template_kwargs"] = kwargs


def needs_streamed_upstream(provider: str, thinking: bool, client_streams: bool) -> bool:
    """DashScope returns 400 for non-streaming calls with thinking on: stream and assemble instead."""
    return provider == "dashscope" and thinking and not client_streams


def normalize_reasoning(obj: dict[str, Any]) -> None:
    """Rename vLLM's `reasoning` to `reasoning_content` in a message or delta, in place."""
    if "reasoning" in obj:
        value = obj.pop("reasoning")
        if value is not None or "reasoning_content" not in obj:
            obj.setdefault("reasoning_content", value)


def normalize_chunk(payload: bytes) -> bytes:
    """Return the SSE payload with `reasoning` renamed; untouched bytes when there is none."""
    if b'"reasoning"' not in payload:
        return payload
    chunk = orjson.loads(payload)
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            normalize_reasoning(delta)
    return orjson.dumps(chunk)


def normalize_completion(result: dict[str, Any]) -> dict[str, Any]:
    for choice in result.get("choices") or []:
        message = choice.get("message")
        if isinstance(message, dict):
            normalize_reasoning(message)
    return result
