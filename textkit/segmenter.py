"""Chinese word segmentation with jieba, one dictionary per owner.

jieba's module-level functions share one process-wide dictionary: `jieba.add_word` from one
component changes how every other one cuts text (loading a retrieval index used to move the
router's scores). A `Segmenter` wraps its own `jieba.Tokenizer` instead. jieba's base dictionary
(about 0.5 s and 60 MB to load) is read once per process and never changed; a segmenter with
words of its own gets a private copy of it (about 10 ms and 15 MB).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_BASE_LOCK = threading.Lock()
_base: Any = None  # the loaded base dictionary: read-only once set
TERM_FREQ = 2000  # frequency given to added terms: high enough that jieba keeps them whole


def _base_tokenizer() -> Any:
    global _base
    with _BASE_LOCK:
        if _base is None:
            import jieba

            jieba.setLogLevel(logging.WARNING)
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            _base = tokenizer
    return _base


class Segmenter:
    """Cuts text into words with jieba's base dictionary plus this segmenter's own terms."""

    def __init__(self, terms: Iterable[str] = ()) -> None:
        self.terms = tuple(dict.fromkeys(t.strip() for t in terms if t and t.strip()))
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def tokenizer(self) -> Any:
        """The jieba tokenizer, built on first use (so constructing a Segmenter is free)."""
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = self._build()
        return self._tokenizer

    def _build(self) -> Any:
        base = _base_tokenizer()
        if not self.terms:
            return base  # shared, and safe to share: nothing ever adds words to it
        import jieba

        own = jieba.Tokenizer()
        own.FREQ = dict(base.FREQ)
        own.total = base.total
        own.initialized = True
        for term in self.terms:
            own.add_word(term, freq=TERM_FREQ)
        return own

    def warm(self) -> Segmenter:
        """Load the dictionary now rather than on the first request."""
        self.cut("预热")
        return self

    def cut(self, text: str) -> list[str]:
        """Dictionary words only (HMM off): faster and deterministic."""
        return self.tokenizer.lcut(text, HMM=False)

    def cut_for_search(self, text: str) -> Iterator[str]:
        """Search mode: long words and also their dictionary parts."""
        return self.tokenizer.cut_for_search(text)
