"""A re-implementation of LiteLLM's `complexity_router` heuristic, as its README describes it, for
comparison in benchmarks/router_eval.py (not used by the gateway).

Seven weighted dimensions of the last user message: tokenCount 0.10 (len/4 tokens: < 15 scores
-1, > 400 scores +1), codePresence 0.30 (1 keyword 0.5, 2+ 1.0), reasoningMarkers 0.25 (1 marker
0.7, 2+ 1.0), technicalTerms 0.25 (2-3 terms 0.5, 4+ 1.0), simpleIndicators 0.05 (any: -1),
multiStepPatterns 0.03 (any: 0.5), questionComplexity 0.02 (more than 3 '?': 0.5). Tiers:
< 0.15 SIMPLE, < 0.35 MEDIUM, < 0.60 COMPLEX, else REASONING; 2+ reasoning markers with a score
of at least 0.15 promote to REASONING. Keyword lists are LiteLLM's defaults (data, listed here).
"""

from __future__ import annotations

import re
from typing import Any

from textkit.conversation import read_conversation

CODE = ["function", "class", "def", "const", "let", "var", "import", "export", "return", "async", "await", "try",
        "catch", "exception", "error", "debug", "api", "endpoint", "request", "response", "database", "sql",
        "query", "schema", "algorithm", "implement", "refactor", "optimize", "python", "javascript",
        "typescript", "java", "rust", "golang", "react", "vue", "angular", "node", "docker", "kubernetes", "git",
        "commit", "merge", "branch", "pull request"]
REASONING = ["step by step", "think through", "let's think", "reason through", "analyze this", "break down",
             "explain your reasoning", "show your work", "chain of thought", "think carefully", "consider all",
             "evaluate", "pros and cons", "compare and contrast", "weigh the options", "logical", "deduce", "infer",
             "conclude"]
TECHNICAL = ["architecture", "distributed", "scalable", "microservice", "machine learning", "neural network",
             "deep learning", "encryption", "authentication", "authorization", "performance", "latency",
             "throughput", "benchmark", "concurrency", "parallel", "threading", "memory", "cpu", "gpu",
             "optimization", "protocol", "tcp", "http", "grpc", "websocket", "container", "orchestration"]
SIMPLE = ["what is", "what's", "define", "definition of", "who is", "who was", "when did", "when was", "where is",
          "where was", "how many", "how much", "yes or no", "true or false", "simple", "brief", "short", "quick",
          "hello", "hi", "hey", "thanks", "thank you", "goodbye", "bye", "okay"]
WEIGHTS = {"tokenCount": 0.10, "codePresence": 0.30, "reasoningMarkers": 0.25, "technicalTerms": 0.25,
           "simpleIndicators": 0.05, "multiStepPatterns": 0.03, "questionComplexity": 0.02}
BOUNDARIES = (0.15, 0.35, 0.60)
TIERS = ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
TIER_ROUTE = {"SIMPLE": "local", "MEDIUM": "local-think", "COMPLEX": "cloud", "REASONING": "cloud"}
_CJK = re.compile(r"[\u4e00-\u9fff]")
_MULTI_STEP = [re.compile(p, re.IGNORECASE) for p in (r"first.*?then", r"step\s*\d", r"[a-z]\)\s")] + [
    re.compile(r"\d+\.\s")]


def _matcher(keyword: str):
    """Phrases and CJK keywords match as substrings; single words on word boundaries."""
    if " " in keyword or _CJK.search(keyword):
        return lambda text: keyword in text
    pattern = re.compile(r"\b" + re.escape(keyword) + r"\b")
    return lambda text: pattern.search(text) is not None


_LISTS = {name: [_matcher(k) for k in words] for name, words in
          (("code", CODE), ("reasoning", REASONING), ("technical", TECHNICAL), ("simple", SIMPLE))}


def _count(text: str, name: str) -> int:
    return sum(1 for match in _LISTS[name] if match(text))


def _graded(count: int, low: int, high: int, scores: tuple[float, float, float]) -> float:
    return scores[0] if count < low else (scores[2] if count >= high else scores[1])


def classify(prompt: str) -> tuple[str, float]:
    """(tier, weighted score) for one prompt."""
    text = prompt.lower()
    tokens = len(prompt) // 4
    reasoning = _count(text, "reasoning")
    dims = {
        "tokenCount": -1.0 if tokens < 15 else (1.0 if tokens > 400 else 0.0),
        "codePresence": _graded(_count(text, "code"), 1, 2, (0.0, 0.5, 1.0)),
        "reasoningMarkers": _graded(reasoning, 1, 2, (0.0, 0.7, 1.0)),
        "technicalTerms": _graded(_count(text, "technical"), 2, 4, (0.0, 0.5, 1.0)),
        "simpleIndicators": _graded(_count(text, "simple"), 1, 2, (0.0, -1.0, -1.0)),
        "multiStepPatterns": 0.5 if any(p.search(text) for p in _MULTI_STEP) else 0.0,
        "questionComplexity": 0.5 if prompt.count("?") > 3 else 0.0,
    }
    score = sum(WEIGHTS[k] * v for k, v in dims.items())
    if reasoning >= 2 and score >= BOUNDARIES[0]:
        return "REASONING", score
    tier = TIERS[sum(score >= b for b in BOUNDARIES)]
    return tier, score


def ranking_score(messages: Any) -> float:
    """A number to rank by: the tier first, then the weighted score within it."""
    tier, score = classify(read_conversation(messages).ask)
    return TIERS.index(tier) + (score + 1.0) / 3.0
