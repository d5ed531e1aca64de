"""Bounds on what a request body may hold, checked before any work grows with it.

Nesting depth: orjson parses up to 1,024 levels but serialises only 254, and LiteLLM's transforms
recurse, so a deep but parseable body used to end as a 500 (and a closed connection). Message count:
each message costs routing, scoring and validation time on the one event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest
from gateway.passthrough import allowed_for
from gateway.settings import Settings


@dataclass(frozen=True)
class InputLimits:
    max_depth: int = 64
    max_messages: int = 2048
    offload_bytes: int = 64 * 1024  # bodies larger than this are parsed and validated in a worker thread
    extras: frozenset[str] = frozenset()  # non-OpenAI fields some backend takes (its pass-through list)

    @classmethod
    def of(cls, settings: Settings) -> InputLimits:
        server = settings.server
        extras = frozenset().union(*(allowed_for(b) for b in settings.backends.values()))
        return cls(server.max_json_depth, server.max_messages, server.offload_body_bytes, extras)


def json_depth_over(value: Any, limit: int) -> bool:
    """True when containers nest deeper than `limit` (the top-level object is depth 1). Iterative,
    so it cannot itself hit Python's recursion limit, and it stops at the first too-deep container."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, (dict, list)))
    return False


def too_deep(limit: int) -> InvalidRequest:
    return InvalidRequest(f"The JSON body nests deeper than {limit} levels (server.max_json_depth).",
                          code="json_too_deep")


def check_depth(data: Any, limit: int) -> None:
    if json_depth_over(data, limit):
        raise too_deep(limit)


def check_message_count(data: dict[str, Any], limit: int, field: str = "messages") -> None:
    messages = data.get(field)
    if isinstance(messages, list) and len(messages) > limit:
        raise InvalidRequest(f"Invalid '{field}': array too long. Expected an array with maximum length {limit}, "
                             f"but got an array with length {len(messages)} instead (server.max_messages).",
                             param=field, code="array_above_max_length")
