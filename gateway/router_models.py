"""Swapping the router's model at run time: a new model file is loaded and checked before it takes a
single request, the swap is one reference change (requests in flight finish on the model they started
with), and the previous model is kept for an immediate rollback.

The check: the file loads as a qroute complexity model, and scores a fixed set of requests (Chinese and
English, short lookups to multi-step analyses, multi-turn, empty) each to a finite number in [0, 1],
not all the same. A model that fails it is refused with the reason; the old one stays.
"""

from __future__ import annotations

import asyncio
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.base import Scorer
from router.decide import Thresholds
from router.learned import LearnedScorer
from router.model import DEFAULT_MODEL_PATH, ComplexityModel

BUNDLED = "bundled"

SMOKE: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "华东精工的客服电话是多少？"}],
    [{"role": "user", "content": "Prove that there are infinitely many primes, then derive their density."}],
    [{"role": "user", "content": "某公司2023年营收1.2亿元，2024年增长15%，毛利率从32%降到28%。请分别计算两年的毛利额，对比变化，并分析原因。"}],
    [{"role": "user", "content": "Write a Python function that merges two sorted lists, with tests."}],
    [{"role": "user", "content": "比较两个采购方案的成本。"}, {"role": "assistant", "content": "方案一120万，方案二105万。"},
     {"role": "user", "content": "那第二个方案的风险呢？"}],
    [{"role": "user", "content": ""}],
]


class ModelRefused(ValueError):
    """The new model file cannot be used; the message says why."""


@dataclass
class Loaded:
    scorer: Scorer
    path: str  # "bundled" for the model shipped with qroute
    thresholds: Thresholds | None = None  # kept with a replaced model when the swap changed them too


def load_checked(path: str, current: Scorer) -> Loaded:
    """Load and check a model file (in a worker thread: it parses a few hundred KB). "bundled" is
    the model shipped with qroute."""
    file = DEFAULT_MODEL_PATH if path == BUNDLED else Path(path)
    if not file.is_file():
        raise ModelRefused(f"no model file at {path}")
    try:
        model = ComplexityModel.load(file)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelRefused(f"{path} is not a usable qroute complexity model: {exc}") from None
    features = current.features if isinstance(current, LearnedScorer) else None
    scorer = LearnedScorer(model, features)
    scores = [scorer.score(messages) for messages in SMOKE]
    if not all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores):
        raise ModelRefused(f"{path} scores outside [0, 1] on the smoke requests: {scores}")
    if max(scores) - min(scores) < 1e-6:
        raise ModelRefused(f"{path} scores every smoke request the same ({scores[0]:.4f}): it cannot rank")
    # Shared with replicas that may run in another directory: a relative path is made absolute here.
    return Loaded(scorer, path if path == BUNDLED else os.path.abspath(path))


async def load_in_thread(path: str, current: Scorer) -> Loaded:
    return await asyncio.to_thread(load_checked, path, current)
