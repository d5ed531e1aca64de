"""The learned scorer: the complexity model plus the domain dictionary, behind the Scorer contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.domain import load_terms
from router.model import DEFAULT_MODEL_PATH, ComplexityModel


class LearnedScorer:
    name = "learned"

    def __init__(self, model: ComplexityModel, domain_terms: frozenset[str] = frozenset()) -> None:
        self.model = model
        self.domain_terms = domain_terms

    @classmethod
    def from_paths(cls, model_path: str | Path | None = None, dictionary: str | Path | None = None) -> LearnedScorer:
        path = Path(model_path) if model_path else DEFAULT_MODEL_PATH
        if not path.is_file():
            raise FileNotFoundError(f"router model not found: {path} (train one with `qroute route train`)")
        scorer = cls(ComplexityModel.load(path), load_terms(dictionary))
        scorer.score([{"role": "user", "content": "预热分词词典"}])  # load jieba's dictionary now, not on a request
        return scorer

    def score(self, messages: list[dict[str, Any]]) -> float:
        return self.model.score(messages, self.domain_terms)

    def explain(self, messages: list[dict[str, Any]]):
        return self.model.explain(messages, self.domain_terms)
