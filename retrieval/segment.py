"""Tokens for lexical search: jieba with a custom dictionary for Chinese, lower-cased words for
the rest. Punctuation and whitespace are dropped; single Latin letters too."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path

_KEEP = re.compile(r"[\w\u3400-\u9fff]", re.UNICODE)
_STOP = frozenset(
    "的 了 和 是 在 与 及 或 也 都 而 并 其 之 为 对 从 把 被 这 那 一个 什么 哪些 哪个 吗 呢 啊 吧 "
    "the a an of to in and or is are was were for on with by as at be".split()
)

_jieba = None


def _tokenizer():
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _jieba = jieba
    return _jieba


def add_terms(terms: Iterable[str]) -> None:
    """Teach jieba company/product/domain terms so each stays one token."""
    jieba = _tokenizer()
    for term in terms:
        term = term.strip()
        if term:
            jieba.add_word(term, freq=2000)


def load_user_dictionary(path: str | Path) -> list[str]:
    """A jieba user dictionary: one term per line, optionally `term freq tag`; # comments."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"user dictionary not found: {path}")
    terms = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    add_terms(terms)
    return terms


def tokenize(text: str) -> list[str]:
    """Search tokens of `text` (jieba's search mode also yields the parts of long words)."""
    jieba = _tokenizer()
    out = []
    for token in jieba.cut_for_search(text.lower()):
        token = token.strip()
        if not token or token in _STOP or not _KEEP.search(token):
            continue
        if len(token) == 1 and token.isascii() and not token.isdigit():
            continue
        out.append(token)
    return out
