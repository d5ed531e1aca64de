"""Which route a request's `model` field asks for: `auto` (the router decides), a route name,
or a configured concrete model id. Anything else is 404 model_not_found.

A request may need what not every backend can do (images, several choices, the legacy completions
endpoint): `auto` then moves to the first route that can (reason `auto:<need>`), a pinned route that
cannot is a 400 naming what is missing, and fallback skips routes that cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import InvalidRequest, ModelNotFound
from gateway.router_state import ThresholdStore
from gateway.settings import BackendConfig, Settings
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


@dataclass(frozen=True)
class Needs:
    """What a request needs from a backend beyond plain chat."""

    vision: bool = False  # image parts
    n: bool = False  # more than one choice
    completions: bool = False  # POST /v1/completions

    def unmet(self, backend: BackendConfig) -> str | None:
        """The first need this backend cannot meet, or None."""
        if self.vision and not backend.capabilities.vision:
            return "vision"
        if self.n and not backend.capabilities.n:
            return "n"
        if self.completions and not backend.serves_completions():
            return "completions"
        return None


_WHAT = {"vision": "images", "n": "more than one choice (n > 1)", "completions": "POST /v1/completions"}
_PARAM = {"vision": "messages", "n": "n", "completions": "model"}
_SETTING = {"vision": "capabilities.vision", "n": "capabilities.n", "completions": "capabilities.completions"}


def build_scorer(settings: Settings) -> Scorer:
    if settings.router.scorer == "length":
        return LengthScorer()
    return LearnedScorer.from_paths(settings.router.model_path, settings.router.domain_dictionary)


_TIER_REASON: dict[Route, str] = {LOCAL: "below_t1", LOCAL_THINK: "between_t1_t2", CLOUD: "above_t2"}


class RouteResolver:
    def __init__(self, settings: Settings, scorer: Scorer) -> None:
        self.settings = settings
        self.scorer = scorer
        self.thresholds = ThresholdStore(Thresholds(settings.router.t1, settings.router.t2),
                                         settings.router.state_file)
        self._by_model: dict[str, Route] = {}
        for route in ROUTES:  # first route naming a model wins: "Qwen/Qwen3-8B" -> local
            model = settings.backends[settings.routes[route].backend].model
            self._by_model.setdefault(model, route)

    def model_ids(self) -> list[str]:
        return [AUTO, *ROUTES, *self._by_model]

    def backend_of(self, route: Route) -> BackendConfig:
        return self.settings.backends[self.settings.routes[route].backend]

    def candidates(self, model: str) -> tuple[Route, ...]:
        """The routes a request for `model` may end up on (none for an unknown model)."""
        if model == AUTO:
            return ROUTES
        if model in ROUTES:
            return (model,)
        route = self._by_model.get(model)
        return (route,) if route is not None else ()

    def can_serve(self, route: Route, needs: Needs) -> bool:
        return needs.unmet(self.backend_of(route)) is None

    def resolve(self, model: str, messages: list[dict[str, Any]], needs: Needs = Needs()) -> RouteDecision:
        if model != AUTO and model not in ROUTES and model not in self._by_model:
            raise ModelNotFound(f"The model '{model}' does not exist. Use 'auto', one of "
                                f"{list(ROUTES)} or a configured model id.", param="model")
        score = self.scorer.score(messages)
        if model == AUTO:
            route = decide(score, self.thresholds.current)
            unmet = needs.unmet(self.backend_of(route))
            if unmet is None:
                return RouteDecision(route, score, f"auto:{self.scorer.name}:{_TIER_REASON[route]}")
            capable = [r for r in (route, *self.settings.fallback.order.get(route, []), *ROUTES)
                       if self.can_serve(r, needs)]
            if not capable:
                raise self._unsupported(unmet, None)
            return RouteDecision(capable[0], score, f"auto:{unmet}")
        pinned: Route = model if model in ROUTES else self._by_model[model]
        unmet = needs.unmet(self.backend_of(pinned))
        if unmet is not None:
            raise self._unsupported(unmet, pinned)
        return RouteDecision(pinned, score, "pinned:route" if model in ROUTES else "pinned:model")

    def _unsupported(self, need: str, route: Route | None) -> InvalidRequest:
        if route is None:
            where = "no route's backend supports it"
        else:
            where = f"route {route} (backend {self.settings.routes[route].backend}) does not support it"
        return InvalidRequest(f"This request needs {_WHAT[need]}, and {where}: set backends.<name>.{_SETTING[need]} "
                              "on a backend that does, or pin a route that does.", param=_PARAM[need],
                              code="unsupported_by_route")
