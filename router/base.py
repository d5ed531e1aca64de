"""The scorer contract, kept apart from deciding (as RouteLLM separates win rate and threshold)."""

from __future__ import annotations

from typing import Any, Protocol


class Scorer(Protocol):
    name: str

    def score(self, messages: list[dict[str, Any]]) -> float:
        """Complexity in [0, 1]: higher means the cloud model is likelier to answer better."""
        ...


def message_text(messages: list[dict[str, Any]]) -> str:
    """The text of a conversation: string contents and the text parts of list contents."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)
