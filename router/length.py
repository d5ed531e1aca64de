"""The length scorer (`router.scorer: length`): longer prompts score higher. The baseline every
learned router must beat.

Characters are weighted so that CJK text (about one token per character) and English (about
four characters per token) land on a similar scale; 600 tokens or more scores 1.0.
"""

from __future__ import annotations

from typing import Any

from textkit.conversation import read_conversation
from textkit.tokens import approx_tokens

_SATURATION_TOKENS = 600.0
# Past this many characters every text saturates, so longer prompts cost no more to score.
_MAX_CHARS = 4 * int(_SATURATION_TOKENS) + 1


class LengthScorer:
    name = "length"

    def score(self, messages: list[dict[str, Any]]) -> float:
        return min(1.0, approx_tokens(read_conversation(messages).ask[:_MAX_CHARS]) / _SATURATION_TOKENS)
