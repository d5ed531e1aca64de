"""Which route a request's `model` field asks for: `auto` (the router decides), a route name,
or a configured concrete model id. Anything else is 404 model_not_found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import ModelNotFound
from gateway.router_state import ThresholdStore
from gateway.settings import Settings
from router.base import Scorer
from router.decide import Thresholds, decide
from router.learned import LearnedScorer
from router.length import LengthScorer
from router.routes import CLOUD, LOCAL, LOCAL_THINK, ROUTES, Route

AUTO = "auto"


@dataclass(frozen=True)
class RouteDecision:
    route: Route
    score: float
    reason: str


def build_scorer(settings: Settings) -> Scorer:
    if settings.router.scorer == "length":
        return LengthScorer()
    return LearnedScorer.from_paths(settings.router.model_path, settings.router.domain_dictionary)


_TIER_REASON: dict[Route, str] = {LOCAL: "below_t1", LOCAL_THINK: "between_t1_t2", CLOUD: "above_t2"}


class RouteResolver:
    def __init__(self, settings: Settings, scorer: Scorer) -> None:
        self.scorer = scorer
        self.thresholds = ThresholdStore(Thresholds(settings.router.t1, settings.router.t2),
                                         settings.router.state_file)
        self._by_model: dict[str, Route] = {}
        for route in ROUTES:  # first route naming a model wins: "Qwen/Qwen3-8B" -> local
            model = settings.backends[settings.routes[route].backend].model
            self._by_model.setdefault(model, route)

    def model_ids(self) -> list[str]:
        return [AUTO, *ROUTES, *self._by_model]

    def resolve(self, model: str, messages: list[dict[str, Any]]) -> RouteDecision:
        if model != AUTO and model not in ROUTES and model not in self._by_model:
            raise ModelNotFound(f"The model '{model}' does not exist. Use 'auto', one of "
                                f"{list(ROUTES)} or a configured model id.", param="model")
        score = self.scorer.score(messages)
        if model == AUTO:
            route = decide(score, self.thresholds.current)
            return RouteDecision(route, score, f"auto:{self.scorer.name}:{_TIER_REASON[route]}")
        if model in ROUTES:
            return RouteDecision(model, score, "pinned:route")
        return RouteDecision(self._by_model[model], score, "pinned:model")
