"""Placeholder scorer: longer prompts score higher. Replaced by the learned router (issue 3).

Characters are weighted so that CJK text (about one token per character) and English (about
four characters per token) land on a similar scale; 600 tokens or more scores 1.0.
"""

from __future__ import annotations

from typing import Any

from router.text import read_conversation

_SATURATION_TOKENS = 600.0
# Past this many characters every text saturates, so longer prompts cost no more to score.
_MAX_CHARS = 4 * int(_SATURATION_TOKENS) + 1


def approx_tokens(text: str) -> float:
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    return cjk + (len(text) - cjk) / 4.0


class LengthScorer:
    name = "length"

    def score(self, messages: list[dict[str, Any]]) -> float:
        return min(1.0, approx_tokens(read_conversation(messages).ask[:_MAX_CHARS]) / _SATURATION_TOKENS)
