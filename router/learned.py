"""The learned scorer: the complexity model plus the router's own feature extractor (segmenter and
domain terms), behind the Scorer contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.domain import load_terms
from router.features import FeatureExtractor
from router.model import DEFAULT_MODEL_PATH, ComplexityModel, Contribution


class LearnedScorer:
    name = "learned"

    def __init__(self, model: ComplexityModel, features: FeatureExtractor | None = None) -> None:
        self.model = model
        self.features = features if features is not None else FeatureExtractor()

    @classmethod
    def from_paths(cls, model_path: str | Path | None = None, dictionary: str | Path | None = None) -> LearnedScorer:
        path = Path(model_path) if model_path else DEFAULT_MODEL_PATH
        if not path.is_file():
            raise FileNotFoundError(f"router model not found: {path} (train one with `qroute route train`)")
        scorer = cls(ComplexityModel.load(path), FeatureExtractor(domain_terms=load_terms(dictionary)))
        scorer.features.segmenter.warm()  # load the dictionary now, not on the first request
        return scorer

    def score(self, messages: list[dict[str, Any]]) -> float:
        return self.model.score(messages, self.features)

    def explain(self, messages: list[dict[str, Any]]) -> tuple[float, list[Contribution], list[tuple[str, float]]]:
        return self.model.explain(messages, self.features)
