"""Sparse lexical index over jieba tokens. `bm25s` (sparse-matrix scoring) by default;
`rank_bm25` (the reference implementation) kept for comparison in benchmarks/retrieval_eval.py."""

from __future__ import annotations

from typing import Literal

import numpy as np

Backend = Literal["bm25s", "rank_bm25"]


class Bm25Index:
    def __init__(self, corpus_tokens: list[list[str]], backend: Backend = "bm25s") -> None:
        self.backend = backend
        self.size = len(corpus_tokens)
        if backend == "bm25s":
            import logging

            import bm25s

            logging.getLogger("bm25s").setLevel(logging.WARNING)

            self._index = bm25s.BM25()
            # Empty token lists would break the vocabulary; a placeholder token matches nothing.
            self._index.index([t or ["\x00"] for t in corpus_tokens], show_progress=False)
        else:
            from rank_bm25 import BM25Okapi

            self._index = BM25Okapi([t or ["\x00"] for t in corpus_tokens])

    def search(self, query_tokens: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the top k chunks with a positive score, best first."""
        if not query_tokens or self.size == 0:
            return np.zeros(0, dtype=int), np.zeros(0)
        k = min(k, self.size)
        if self.backend == "bm25s":
            docs, scores = self._index.retrieve([query_tokens], k=k, show_progress=False, n_threads=1)
            idx, sc = np.asarray(docs[0], dtype=int), np.asarray(scores[0], dtype=float)
        else:
            all_scores = self._index.get_scores(query_tokens)
            idx = np.argsort(-all_scores, kind="stable")[:k]
            sc = all_scores[idx]
        keep = sc > 0
        return idx[keep], sc[keep]
