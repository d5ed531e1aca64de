"""Choosing an index's fusion (RRF or weighted min-max, and the weight) on labelled queries, honestly.

The queries are split in two by their gold document (seeded), so no document's questions are on
both sides: the setting is chosen on one half and judged on the other, and nothing used to choose
is used to judge. `qroute index tune-fusion` runs it for a deployment's own corpus and queries;
benchmarks/retrieval_eval.py runs it on CMRC 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.fusion import minmax, rrf, top
from retrieval.specs import FusionSetting

Ranking = tuple[np.ndarray, np.ndarray]  # chunk indices, best first, and their scores
WEIGHTS = tuple(round(w, 1) for w in np.linspace(0.0, 1.0, 11))  # min-max dense shares tried


def candidates() -> list[FusionSetting]:
    return [FusionSetting(method="rrf")] + [FusionSetting(method="minmax", dense_weight=w) for w in WEIGHTS]


def fuse(setting: FusionSetting, lexical: Ranking, dense: Ranking, k: int) -> list[int]:
    """The same fusion as retrieval.pipeline.Retriever, on precomputed rankings."""
    if setting.method == "minmax":
        fused = minmax([lexical, dense], [1 - setting.dense_weight, setting.dense_weight])
    else:
        fused = rrf([lexical[0], dense[0]])
    return [i for i, _ in top(fused, k)]


def ndcg_at_10(ranked: Sequence[int], relevant: set[int]) -> float:
    """Binary relevance; the ideal ranking puts every relevant chunk first."""
    if not relevant:
        return 0.0
    dcg = sum(1 / math.log2(pos + 2) for pos, i in enumerate(ranked[:10]) if i in relevant)
    ideal = sum(1 / math.log2(pos + 2) for pos in range(min(len(relevant), 10)))
    return dcg / ideal


def split_by_group(groups: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Query indices of the choosing half and the judging half: whole groups (gold documents) go
    to one side, in a seeded random order, until the choosing half holds half the queries."""
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    counts = {g: 0 for g in names}
    for g in groups:
        counts[g] += 1
    choose, total = set(), 0
    for i in order:
        if total >= len(groups) / 2:
            break
        choose.add(names[i])
        total += counts[names[i]]
    mask = np.array([g in choose for g in groups])
    return np.flatnonzero(mask), np.flatnonzero(~mask)


@dataclass
class TuneResult:
    chosen: FusionSetting
    choose_queries: int
    judge_queries: int
    choose: dict[str, float]  # setting name -> mean nDCG@10 on the choosing half
    judge: dict[str, float]  # the same on the judging half

    def to_dict(self) -> dict:
        return {"method": self.chosen.method, "dense_weight": self.chosen.dense_weight,
                "chosen": self.chosen.name, "queries": {"choose": self.choose_queries, "judge": self.judge_queries},
                "nDCG@10 choose": self.choose, "nDCG@10 judge": self.judge}


def tune(runs: Sequence[tuple[Ranking, Ranking]], relevant: Sequence[set[int]], groups: Sequence[str],
         seed: int = 0) -> TuneResult:
    """Each query's BM25 and dense rankings, its relevant chunks and its group (gold document).
    The setting with the best mean nDCG@10 on the choosing half wins (ties: RRF, then the weight
    nearest 0.5); every setting is also scored on the judging half, to report, not to choose."""
    if len(runs) < 4 or len(set(groups)) < 2:
        raise ValueError("need at least 4 queries about at least 2 different documents to split in two")
    pick, judge = split_by_group(groups, seed)
    settings = candidates()
    scores = np.array([[ndcg_at_10(fuse(s, lex, den, 10), rel) for s in settings]
                       for (lex, den), rel in zip(runs, relevant, strict=True)])
    on_pick, on_judge = scores[pick].mean(axis=0), scores[judge].mean(axis=0)

    def rank(j: int) -> tuple[float, int, float]:
        s = settings[j]
        return round(float(on_pick[j]), 9), int(s.method == "rrf"), -abs(s.dense_weight - 0.5)
    best = max(range(len(settings)), key=rank)
    return TuneResult(settings[best], len(pick), len(judge),
                      {s.name: float(v) for s, v in zip(settings, on_pick, strict=True)},
                      {s.name: float(v) for s, v in zip(settings, on_judge, strict=True)})
