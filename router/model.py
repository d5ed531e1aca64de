"""The learned complexity model: a linear decision over the named features (a length prior plus a
shrunk learned correction, router/train.py) and, optionally, character n-gram TF-IDF, stored as
one small gzipped JSON file and scored in plain Python.

Scoring replicates scikit-learn's `TfidfVectorizer(analyzer="char", sublinear_tf=True, norm="l2")`
transform and the regression's decision function exactly, without scikit-learn on the request
path: its per-call overhead alone is several hundred microseconds, this is a dict lookup per
n-gram. Tests check the two agree.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from router.features import FEATURE_NAMES, FEATURE_WORDS, FeatureExtractor
from textkit.conversation import Conversation, read_conversation

NGRAM_CHARS = 800  # the n-gram part reads at most this much of the ask
TAIL = 0.01  # the share of the score scale given to decisions outside the training range, each end
Z_CLIP = 4.0  # standardized features are clipped: values far outside the training range add no more
_WHITESPACE = re.compile(r"\s\s+")

# Features the public training data never exercise (single-turn, text-only, no company terms):
# a regression cannot learn their weight, so they carry these priors (logit per unit of the
# log1p-scaled feature) until the model is retrained on traffic that has them.
PRIORS: dict[str, float] = {
    "turns": 0.15, "follow_up": 0.25, "images": 0.4, "context_tokens": 0.08, "domain_terms": 0.15,
    "system_tokens": 0.03,
}


def ngram_text(ask: str) -> str:
    """The text the n-gram part sees: lower-cased, capped, whitespace runs collapsed (as sklearn)."""
    return _WHITESPACE.sub(" ", ask[:NGRAM_CHARS].lower())


def char_ngrams(text: str, low: int, high: int) -> Counter[str]:
    """Every character n-gram, low <= n <= high, with its count. zip/map/join keep the loop in C:
    a Python-level slice per n-gram was the scorer's largest cost."""
    grams: Counter[str] = Counter()
    for n in range(low, high + 1):
        shifted = (text[i:] for i in range(n))  # zip stops at the shortest: the last full n-gram
        grams.update(text if n == 1 else map("".join, zip(*shifted, strict=False)))
    return grams


@dataclass
class Contribution:
    name: str
    words: str
    value: float  # the feature's raw value
    logit: float  # what it added to the decision


@dataclass
class ComplexityModel:
    feature_names: tuple[str, ...]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    ngram_range: tuple[int, int]
    vocab: dict[str, tuple[float, float]]  # n-gram -> (idf, coef)
    intercept: float
    quantiles: list[float]  # decision values at evenly spaced quantiles of the training rows
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Array form of `vocab` for scoring: row 0 is a blank for n-grams outside it, so one
        # C-level map over a request's n-grams finds every row without a Python loop.
        self._row = {gram: i for i, gram in enumerate(self.vocab, 1)}
        self._idf = np.array([0.0, *(idf for idf, _ in self.vocab.values())])
        self._coef = np.array([0.0, *(coef for _, coef in self.vocab.values())])

    # --- scoring --------------------------------------------------------------------------
    def _feature_logits(self, values: list[float]) -> list[float]:
        out = []
        for name, v, m, s, c in zip(self.feature_names, values, self.mean, self.scale, self.coef, strict=True):
            out.append(c * min(max((v - m) / s, -Z_CLIP), Z_CLIP) if s > 0 else PRIORS.get(name, 0.0) * v)
        return out

    def _ngram_parts(self, ask: str) -> tuple[Counter[str], np.ndarray]:
        """Each n-gram of the ask and what it adds to the decision (0 outside the vocabulary):
        sklearn's sublinear, l2-normalised TF-IDF times the coefficients, on arrays."""
        if not self._row:  # a model without n-grams: nothing to cut or look up
            return Counter(), np.zeros(0)
        grams = char_ngrams(ngram_text(ask), *self.ngram_range)
        count = len(grams)
        rows = np.fromiter(map(self._row.get, grams, repeat(0, count)), dtype=np.intp, count=count)
        values = (1.0 + np.log(np.fromiter(grams.values(), dtype=float, count=count))) * self._idf[rows]
        norm = math.sqrt(float(values @ values))
        return grams, (values * self._coef[rows] / norm if norm > 0 else np.zeros(count))  # same order

    def _ngram_logit(self, ask: str) -> float:
        return float(self._ngram_parts(ask)[1].sum())

    def decisions(self, x_feat: np.ndarray, asks: list[str]) -> np.ndarray:
        """`decision` for many rows of already extracted features at once (benchmarks, training
        reports): the same arithmetic on arrays."""
        mean, scale = np.asarray(self.mean), np.asarray(self.scale)
        priors = np.array([PRIORS.get(name, 0.0) for name in self.feature_names])
        z = np.clip((x_feat - mean) / np.where(scale > 0, scale, 1.0), -Z_CLIP, Z_CLIP)
        named = np.where(scale > 0, z * np.asarray(self.coef), priors * x_feat).sum(axis=1)
        wording = np.array([self._ngram_logit(a) for a in asks]) if self._row else 0.0
        return self.intercept + named + wording

    def decision(self, conv: Conversation, features: FeatureExtractor) -> float:
        values = features.extract(conv)
        return self.intercept + sum(self._feature_logits(values)) + self._ngram_logit(conv.ask)

    def to_score(self, decision: float) -> float:
        """The share of training requests with a lower decision: 0.8 means more complex than 80%
        of them, so a threshold reads as a traffic share. Monotone, so ranking is unchanged."""
        q = self.quantiles
        # Outside the training range the tails still rank (a chat message shorter than every
        # training question must not tie with all the others at 0): they approach 0 and 1 within
        # TAIL, which the inside gives up.
        if decision <= q[0]:
            return TAIL * math.exp(max(decision - q[0], -700.0))
        if decision >= q[-1]:
            return 1.0 - TAIL * math.exp(max(q[-1] - decision, -700.0))
        i = bisect.bisect_right(q, decision)
        lo, hi = q[i - 1], q[i]
        frac = (decision - lo) / (hi - lo) if hi > lo else 0.0
        return TAIL + (1.0 - 2 * TAIL) * (i - 1 + frac) / (len(q) - 1)

    def score_conversation(self, conv: Conversation, features: FeatureExtractor) -> float:
        return self.to_score(self.decision(conv, features))

    def score(self, messages: Any, features: FeatureExtractor) -> float:
        return self.score_conversation(read_conversation(messages), features)

    def explain(self, messages: Any, features: FeatureExtractor,
                ) -> tuple[float, list[Contribution], list[tuple[str, float]]]:
        """The score, each named feature's contribution, and the n-grams that moved it most."""
        conv = read_conversation(messages)
        values = features.extract(conv)
        logits = self._feature_logits(values)
        grams, adds = self._ngram_parts(conv.ask)
        ngram_logit = float(adds.sum())
        parts = [(gram, float(add)) for gram, add in zip(grams, adds, strict=True) if add != 0.0]
        contributions = []
        for i, (name, value, logit) in enumerate(zip(self.feature_names, values, logits, strict=True)):
            high, low = FEATURE_WORDS[name]
            above = value > self.mean[i] if self.scale[i] > 0 else value > 0
            contributions.append(Contribution(name, high if above else low, value, logit))
        contributions.append(Contribution("wording", "wording like the training examples", 0.0, ngram_logit))
        parts.sort(key=lambda p: -abs(p[1]))
        decision = self.intercept + sum(logits) + ngram_logit
        return self.to_score(decision), contributions, parts[:8]

    # --- storage --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        payload = {
            "format": "qroute-complexity-model/1",
            "feature_names": list(self.feature_names), "mean": self.mean, "scale": self.scale, "coef": self.coef,
            "ngram_range": list(self.ngram_range), "ngram_chars": NGRAM_CHARS, "intercept": self.intercept,
            "quantiles": self.quantiles,
            "vocab": {g: [round(i, 5), round(c, 6)] for g, (i, c) in self.vocab.items()}, "meta": self.meta,
        }
        tmp = Path(f"{path}.tmp")
        with gzip.open(tmp, "wt", encoding="utf-8") as fh:
            json.dump(payload, fh, ensure_ascii=False, separators=(",", ":"))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> ComplexityModel:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            payload = json.load(fh)
        if payload.get("format") != "qroute-complexity-model/1":
            raise ValueError(f"{path}: not a qroute complexity model")
        if tuple(payload["feature_names"]) != FEATURE_NAMES:
            raise ValueError(f"{path}: trained with other features; retrain with `qroute route train`")
        return cls(
            feature_names=tuple(payload["feature_names"]), mean=payload["mean"], scale=payload["scale"],
            coef=payload["coef"], ngram_range=tuple(payload["ngram_range"]),
            vocab={g: (v[0], v[1]) for g, v in payload["vocab"].items()}, intercept=payload["intercept"],
            quantiles=payload["quantiles"],
            meta=payload.get("meta", {}),
        )


DEFAULT_MODEL_PATH = Path(__file__).parent / "artifacts" / "complexity.json.gz"
