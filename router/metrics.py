"""Router quality metrics exactly as RouteLLM's `routellm/evals/evaluate.py` defines them.

For `num_results` = 10: the 11 quantile edges of the router's scores are the thresholds; at each,
requests scoring >= the edge (> for the last edge) go to the strong model. Performance is the
mean outcome in percent, strong share the percent of requests sent to it. Then
  AUC  = trapezoid(performance, strong_share / 100)
  APGR = (AUC - weak_AUC) / (strong_AUC - weak_AUC), the weak/strong AUCs being constants over
         the same x points (random routing scores about 0.5)
  CPT(x%) = np.interp(weak + x * (strong - weak), performance, strong_share): the strong-call
         percentage needed to recover x of the quality gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RouterCurve:
    strong_pct: np.ndarray  # sorted ascending
    performance: np.ndarray  # in percent, aligned with strong_pct
    weak_perf: float
    strong_perf: float


def routing_curve(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, num_results: int = 10) -> RouterCurve:
    scores = np.asarray(scores, dtype=float)
    weak = np.asarray(weak, dtype=float)
    strong = np.asarray(strong, dtype=float)
    thresholds = np.quantile(scores, np.linspace(0, 1, num_results + 1))  # pd.qcut's bin edges
    pct, perf = [], []
    for i, threshold in enumerate(thresholds):
        chosen = scores >= threshold if i != len(thresholds) - 1 else scores > threshold
        perf.append(np.where(chosen, strong, weak).mean() * 100)
        pct.append(chosen.mean() * 100)
    order = np.argsort(pct, kind="stable")
    return RouterCurve(np.array(pct)[order], np.array(perf)[order], weak.mean() * 100, strong.mean() * 100)


def apgr(curve: RouterCurve) -> float:
    x = curve.strong_pct / 100
    auc = np.trapezoid(curve.performance, x)
    weak_auc = np.trapezoid(np.full_like(x, curve.weak_perf), x)
    strong_auc = np.trapezoid(np.full_like(x, curve.strong_perf), x)
    return float((auc - weak_auc) / (strong_auc - weak_auc))


def cpt(curve: RouterCurve, quality: float) -> float:
    """Percent of strong calls needed to reach `quality` (0.5 for CPT(50%)) of the gap."""
    target = quality * (curve.strong_perf - curve.weak_perf) + curve.weak_perf
    return float(np.interp(target, curve.performance, curve.strong_pct))


def pgr_curve(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray,
              points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """A finer curve for plotting: share of strong calls against share of the gap recovered."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    gain = (np.asarray(strong, float) - np.asarray(weak, float))[order]
    gap = gain.sum()
    cum = np.concatenate([[0.0], np.cumsum(gain)])
    shares = np.linspace(0, 1, points)
    idx = np.round(shares * len(gain)).astype(int)
    return shares, cum[idx] / gap if gap else np.zeros_like(shares)
