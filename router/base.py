"""The scorer contract, kept apart from deciding (as RouteLLM separates win rate and threshold)."""

from __future__ import annotations

from typing import Any, Protocol


class Scorer(Protocol):
    name: str

    def score(self, messages: list[dict[str, Any]]) -> float:
        """Complexity in [0, 1]: higher means the cloud model is likelier to answer better."""
        ...

