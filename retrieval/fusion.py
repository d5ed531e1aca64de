"""Fusing the lexical and dense rankings: reciprocal rank fusion, or weighted min-max scores."""

from __future__ import annotations

import numpy as np


def rrf(rankings: list[np.ndarray], k: int = 60) -> dict[int, float]:
    """Reciprocal rank fusion: sum over rankings of 1 / (k + rank), ranks from 1."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, idx in enumerate(ranking, 1):
            fused[int(idx)] = fused.get(int(idx), 0.0) + 1.0 / (k + rank)
    return fused


def minmax(results: list[tuple[np.ndarray, np.ndarray]], weights: list[float]) -> dict[int, float]:
    """Each ranking's scores scaled to [0, 1], then a weighted sum (absent = 0)."""
    fused: dict[int, float] = {}
    for (idx, scores), weight in zip(results, weights, strict=True):
        if len(scores) == 0:
            continue
        lo, hi = float(np.min(scores)), float(np.max(scores))
        span = hi - lo
        for i, s in zip(idx, scores, strict=True):
            norm = (float(s) - lo) / span if span > 0 else 1.0
            fused[int(i)] = fused.get(int(i), 0.0) + weight * norm
    return fused


def top(fused: dict[int, float], k: int) -> list[tuple[int, float]]:
    return sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
