"""retrieve(): lexical and dense candidates, fused, optionally reranked; and the grounded context
assembled from them for the system message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from retrieval.bm25 import Bm25Index
from retrieval.dense import Embedder
from retrieval.fusion import minmax, rrf, top
from retrieval.index import IndexData, load_index
from retrieval.rerank import Reranker
from retrieval.segment import SearchTokenizer
from retrieval.specs import (
    EmbedderSpec,
    FusionSetting,
    RerankerSpec,
    SecretLookup,
    build_embedder,
    build_reranker,
    no_secrets,
)
from textkit.tokens import approx_tokens

Mode = Literal["hybrid", "bm25", "dense"]

CANDIDATES = 50  # from each ranker, before fusion


@dataclass
class Hit:
    chunk: int
    doc_id: str
    title: str
    text: str
    score: float
    metadata: dict[str, Any]


def single_threaded_blas() -> None:
    """One BLAS thread, process-wide. A matrix-vector product gains nothing from more, and idle
    OpenBLAS threads spinning after it starve the embedder's own threads on a small machine:
    measured on 2 cores, 10k chunks, hybrid p99 112 ms with BLAS threads, 8 ms without."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


class Retriever:
    """Loaded once; `search` is CPU-bound and thread-safe for concurrent readers. Owns the
    index's tokenizer: the index's dictionary changes nothing outside it."""

    def __init__(self, data: IndexData, embedder: Embedder | None = None, reranker: Reranker | None = None,
                 mode: Mode = "hybrid", fusion: FusionSetting | None = None) -> None:
        single_threaded_blas()
        self.data = data
        # The index's own fusion (its manifest), unless the caller overrides it (gateway settings).
        self.fusion = fusion or FusionSetting(method=data.config.fusion, dense_weight=data.config.dense_weight)
        self.tokenize = SearchTokenizer(data.terms)
        self.bm25 = Bm25Index(data.tokens, data.config.bm25_backend)
        self.embedder = embedder
        self.reranker = reranker
        self.mode: Mode = mode if embedder is not None and data.embeddings is not None else "bm25"

    @classmethod
    def open(cls, index_dir: str | Path, mode: Mode = "hybrid", embedder: EmbedderSpec | None = None,
             reranker: RerankerSpec | None = None, secrets: SecretLookup = no_secrets,
             fusion: FusionSetting | None = None) -> Retriever:
        """Open an index with the embedder and reranker its manifest names, or the ones given
        (same vectors, another place to compute them: e.g. the production embedding endpoint)."""
        data = load_index(index_dir)
        built_embedder = build_embedder(embedder or data.config.embedder, secrets) \
            if data.embeddings is not None else None
        return cls(data, built_embedder, build_reranker(reranker or data.config.reranker, secrets), mode, fusion)

    def _dense(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.embedder is not None and self.data.embeddings is not None
        q = self.embedder.encode_queries([query])[0]
        sims = self.data.embeddings @ q
        k = min(k, len(sims))
        idx = np.argpartition(-sims, k - 1)[:k]
        idx = idx[np.argsort(-sims[idx], kind="stable")]
        return idx, sims[idx]

    def search(self, query: str, top_k: int = 5) -> list[Hit]:
        query = (query or "").strip()
        if not query or not self.data.chunks or top_k <= 0:
            return []
        ranked: list[tuple[int, float]]
        if self.mode == "bm25":
            lexical = self.bm25.search(self.tokenize(query), CANDIDATES)
            ranked = list(zip(lexical[0].tolist(), lexical[1].tolist(), strict=True))
        elif self.mode == "dense":
            dense = self._dense(query, CANDIDATES)
            ranked = list(zip(dense[0].tolist(), dense[1].tolist(), strict=True))
        else:
            ranked = self._fused(query)
        if self.reranker is not None and ranked:
            pool = ranked[: max(top_k * 4, 20)]
            scores = self.reranker.scores(query, [self.data.chunks[i].text for i, _ in pool])
            ranked = sorted(zip([i for i, _ in pool], scores, strict=True), key=lambda p: -p[1])
        hits = []
        for i, score in ranked[:top_k]:
            c = self.data.chunks[i]
            hits.append(Hit(i, c.doc_id, c.title, c.text, float(score), c.metadata))
        return hits

    def rankings(self, query: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """BM25's and the dense ranker's candidates (indices, scores), before fusion: what
        retrieval.tune chooses a fusion on."""
        return self.bm25.search(self.tokenize(query), CANDIDATES), self._dense(query, CANDIDATES)

    def _fused(self, query: str) -> list[tuple[int, float]]:
        lexical, dense = self.rankings(query)
        if self.fusion.method == "minmax":
            w = self.fusion.dense_weight
            return top(minmax([lexical, dense], [1 - w, w]), CANDIDATES)
        return top(rrf([lexical[0], dense[0]]), CANDIDATES)


def assemble_context(hits: list[Hit], budget_tokens: int = 1200) -> tuple[str, list[dict[str, Any]]]:
    """Top chunks within a token budget (estimated: a token per Chinese character, four other
    characters per token), duplicates merged, each cited as [n] with its source; returns
    the system-message text and the source list."""
    sources: list[dict[str, Any]] = []
    seen_text: set[str] = set()
    lines: list[str] = []
    used = 0.0
    by_doc: dict[str, int] = {}
    for hit in hits:
        key = hit.text.strip()
        if key in seen_text:
            continue
        size = approx_tokens(key)
        if used + size > budget_tokens and lines:
            break
        seen_text.add(key)
        if hit.doc_id not in by_doc:
            sources.append({"id": len(sources) + 1, "doc_id": hit.doc_id, "title": hit.title})
            by_doc[hit.doc_id] = len(sources)
        n = by_doc[hit.doc_id]
        lines.append(f"[{n}] {key}")
        used += size
    if not lines:
        return "", []
    refs = "\n".join(f"[{s['id']}] {s['title'] or s['doc_id']} ({s['doc_id']})" for s in sources)
    text = ("Answer using the reference material below when it is relevant, and cite it as [n]. "
            "If it does not contain the answer, say so.\n\n" + "\n".join(lines) + "\n\nSources:\n" + refs)
    return text, sources
