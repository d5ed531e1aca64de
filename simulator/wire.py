"""Response bodies in each upstream's wire format: chunks, completions, usage, errors."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from simulator import judging
from simulator.behaviour import Behaviour

_WORDS = (
    "The answer depends on the data you have . Here is a short grounded reply with the key points , "
    "then a brief summary so the caller can check each step ."
).split()
_THOUGHT = "Let me think step by step about what is asked and which facts matter .".split()


def count_prompt_tokens(body: dict[str, Any]) -> int:
    """Rough token count: about four characters a token, as tokenizers average on English."""
    chars = 0
    for msg in body.get("messages") or []:
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return max(1, chars // 4) + 4 * len(body.get("messages") or [])


def count_text_tokens(prompt: Any) -> int:
    """A legacy completion's prompt: text (about four characters a token) or token ids."""
    if isinstance(prompt, str):
        return max(1, len(prompt) // 4)
    if isinstance(prompt, list):
        return sum(count_text_tokens(p) if not isinstance(p, int) else 1 for p in prompt)
    return 1


def choices_asked(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and n > 1 else 1


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def answer_tokens(body: dict[str, Any], behaviour: Behaviour) -> tuple[list[str], str]:
    """The content tokens and the finish reason, honouring max_tokens, stop and response_format; a
    JSON answer also when the prompt asks for JSON, as a model would, so frameworks that parse it
    can finish."""
    verdict = judging.judge_reply(body)
    if verdict is not None:
        return [verdict], "stop"
    limit = body.get("max_tokens") or body.get("max_completion_tokens") or behaviour.output_tokens
    n = min(int(limit), behaviour.output_tokens)
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema") or "json" in _last_user_text(body).lower():
        words = ['{"answer": "', *[_WORDS[i % len(_WORDS)] + " " for i in range(max(n - 2, 1))], '"}']
    else:
        words = [(_WORDS[i % len(_WORDS)] + " ") for i in range(n)]
    if behaviour.weak_on and judging.is_weak_on(_last_user_text(body), behaviour.weak_on):
        words = [judging.WEAK_MARKER + " ", *words[1:]]
    finish = "length" if int(limit) < behaviour.output_tokens else "stop"
    stops = body.get("stop")
    stops = [stops] if isinstance(stops, str) else (stops or [])
    for stop in stops:
        for i, word in enumerate(words):
            if stop and stop in word:
                return words[:i], "stop"
    return words, finish


def reasoning_tokens(behaviour: Behaviour) -> list[str]:
    return [_THOUGHT[i % len(_THOUGHT)] + " " for i in range(behaviour.reasoning_tokens)]


def tool_call_for(body: dict[str, Any]) -> dict[str, Any] | None:
    """Call the named tool, or the first one, unless tool_choice is 'none' or the conversation
    already ends with a tool's result: then answer in text, so an agent loop through it ends."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice", "auto")
    messages = body.get("messages") or []
    after_tool = bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") in ("tool", "function")
    if not tools or choice == "none" or (after_tool and choice in ("auto", None)):
        return None
    name = tools[0].get("function", {}).get("name", "tool")
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name", name)
    return {"id": "call_" + uuid.uuid4().hex[:24], "name": name, "arguments": '{"city": "Hangzhou", "unit": "c"}'}


def usage(prompt: int, completion: int, reasoning: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return out


class ChunkWriter:
    """Builds `data: ...` SSE frames that share one id, model and created time."""

    def __init__(self, model: str, flavour: str, kind: str = "chat") -> None:
        self.base = {
            "id": ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self.flavour = flavour

    def chunk(self, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if self.flavour == "vllm":
            choice["logprobs"] = None
        return self.frame({**self.base, "choices": [choice]})

    def text_chunk(self, text: str, finish: str | None, index: int) -> bytes:
        return self.frame({**self.base, "choices": [{"index": index, "text": text, "logprobs": None,
                                                     "finish_reason": finish}]})

    def text_completion(self, text: str, finish: str, choices: int, usage_body: dict[str, Any]) -> dict[str, Any]:
        return {**self.base, "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                                         for i in range(choices)], "usage": usage_body}

    def usage_chunk(self, usage_body: dict[str, Any]) -> bytes:
        return self.frame({**self.base, "choices": [], "usage": usage_body})

    @staticmethod
    def frame(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def completion(
    model: str,
    content: str | None,
    reasoning: str | None,
    reasoning_field: str,
    tool_call: dict[str, Any] | None,
    finish: str,
    usage_body: dict[str, Any],
    choices: int = 1,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[reasoning_field] = reasoning
    if tool_call:
        message["tool_calls"] = [
            {
                "id": tool_call["id"],
                "type": "function",
                "function": {"name": tool_call["name"], "arguments": tool_call["arguments"]},
            }
        ]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": message, "finish_reason": finish} for i in range(choices)],
        "usage": usage_body,
    }


def error_body(flavour: str, status: int, message: str, code: str | None = None, param: str | None = None) -> bytes:
    """vLLM: {"error": {message, type: <ExceptionName>, param, code: <status>}};
    DashScope: {"error": {message, type, param, code: <string>}, "request_id": ...}."""
    if flavour == "vllm":
        kind = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}.get(
            status, "InternalServerError"
        )
        return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": status}})
    kind = "invalid_request_error" if status < 500 else "internal_error"
    if status == 429:
        kind, code = "limit_requests", code or "Throttling.RateQuota"
    return orjson.dumps(
        {
            "error": {"message": message, "type": kind, "param": param, "code": code or kind},
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "request_id": str(uuid.uuid4()),
        }
    )
