"""Reranking the fused candidates: none (the offline default), FlagEmbedding's FlagReranker
(bge-reranker-v2-m3) from a local path, or a Jina/Cohere-style `/v1/rerank` endpoint.
Switchable per index: published results show bge-reranker-v2-m3 lowering scores on product-style data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from retrieval.dense import check_model_path, post_json
from retrieval.errors import BackendUnavailable


class Reranker(Protocol):
    name: str

    def scores(self, query: str, passages: Sequence[str]) -> list[float]: ...


class FlagRerankerModel:
    name = "bge-reranker"

    def __init__(self, model_path: str | Path, use_fp16: bool = False) -> None:
        path = check_model_path(model_path, "reranker")
        from FlagEmbedding import FlagReranker

        self._model = FlagReranker(str(path), use_fp16=use_fp16)

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        out = self._model.compute_score([[query, p] for p in passages], normalize=True)
        return [float(x) for x in (out if isinstance(out, list) else [out])]


class HttpReranker:
    """POST {base_url}/rerank {"model", "query", "documents"} -> results[{index, relevance_score}]."""

    name = "http-rerank"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        import httpx

        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.model = model

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        body = post_json(self._client, "/rerank", {"model": self.model, "query": query, "documents": list(passages)},
                         "rerank")
        out = [0.0] * len(passages)
        try:
            for item in body["results"]:
                out[item["index"]] = float(item["relevance_score"])
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise BackendUnavailable(f"rerank endpoint sent an unexpected body ({exc!r})") from None
        return out
