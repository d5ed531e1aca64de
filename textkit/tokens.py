"""A token estimate without a tokenizer: about one token per CJK character and four other
characters per token, close enough to Qwen's tokenizer for budgets and length limits."""

from __future__ import annotations

from textkit.cjk import cjk_count


def approx_tokens(text: str) -> float:
    cjk = cjk_count(text)
    return cjk + (len(text) - cjk) / 4.0
