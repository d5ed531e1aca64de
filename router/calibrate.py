"""Thresholds from a traffic sample: the score above which a given share of requests falls
(RouteLLM's calibration: a quantile of the scores on representative traffic)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def threshold_for_share(scores: Sequence[float] | np.ndarray, cloud_share: float) -> float:
    """The threshold that sends `cloud_share` of these requests to the cloud (score > threshold)."""
    if not 0.0 <= cloud_share <= 1.0:
        raise ValueError("the cloud share must be between 0 and 1")
    if len(scores) == 0:
        raise ValueError("the sample has no requests")
    return float(np.quantile(np.asarray(scores, dtype=float), 1.0 - cloud_share))


def share_above(scores: Sequence[float] | np.ndarray, threshold: float) -> float:
    return float((np.asarray(scores, dtype=float) > threshold).mean())
