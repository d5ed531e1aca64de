"""Tokens for lexical search: jieba with the index's own dictionary for Chinese, lower-cased
words for the rest. Punctuation and whitespace are dropped; single Latin letters too.

Each index has its own `SearchTokenizer` (its own segmenter), so its terms never leak into the
router's segmentation or into another index's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from textkit.cjk import CJK_RANGES
from textkit.segmenter import Segmenter

_KEEP = re.compile(rf"[\w{CJK_RANGES}]", re.UNICODE)
_STOP = frozenset(
    "的 了 和 是 在 与 及 或 也 都 而 并 其 之 为 对 从 把 被 这 那 一个 什么 哪些 哪个 吗 呢 啊 吧 "
    "the a an of to in and or is are was were for on with by as at be".split()
)


class SearchTokenizer:
    """Search tokens of a text (jieba's search mode also yields the parts of long words)."""

    def __init__(self, terms: Iterable[str] = ()) -> None:
        self.segmenter = Segmenter(terms)

    def __call__(self, text: str) -> list[str]:
        out = []
        for token in self.segmenter.cut_for_search(text.lower()):
            token = token.strip()
            if not token or token in _STOP or not _KEEP.search(token):
                continue
            if len(token) == 1 and token.isascii() and not token.isdigit():
                continue
            out.append(token)
        return out
