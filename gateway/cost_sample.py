"""A traffic sample through the router: the route shares and month the current thresholds give,
and the thresholds that keep a month within a budget (RouteLLM-style quantile calibration, checked
by re-deciding every request)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from gateway.cost_plan import REFERENCE_HARDWARE, Pricing, Traffic, per_call_cny
from gateway.settings import ConfigError, Price, RouterConfig
from router.calibrate import threshold_for_share
from router.decide import Thresholds, decide
from router.routes import CLOUD, LOCAL, ROUTES, Route
from textkit.conversation import full_text
from textkit.jsonl import read_jsonl
from textkit.tokens import approx_tokens


@dataclass(frozen=True)
class RouteShare:
    route: Route
    share: float
    requests: int
    mean_prompt_tokens: float
    priced_as: str
    monthly_cny: float


@dataclass(frozen=True)
class BudgetResult:
    budget_cny: float
    feasible: bool
    t1: float | None = None
    t2: float | None = None
    cloud_share: float | None = None
    think_share: float | None = None
    monthly_cny: float | None = None
    note: str = ""


@dataclass(frozen=True)
class SampleResult:
    path: str
    requests: int
    scorer: str
    t1: float
    t2: float
    routes: list[RouteShare]
    fixed_cny: float
    monthly_cny: float
    budget: BudgetResult | None = None


@dataclass(frozen=True)
class SampleRequest:
    score: float
    prompt_tokens: int


@dataclass(frozen=True)
class RoutePricing:
    """How each route is priced: a fixed GPU (by backend) or per token at a model's price."""

    hardware: dict[Route, str]  # route -> backend whose hardware serves it
    prices: dict[Route, tuple[str, Price]]  # route -> (model, price)
    fixed_cny: float  # every distinct GPU's month

    def request_cny(self, route: Route, request: SampleRequest, output_tokens: int) -> float:
        if route in self.hardware:
            return 0.0
        _, price = self.prices[route]
        return per_call_cny(price, request.prompt_tokens, output_tokens)


def route_pricing(p: Pricing) -> RoutePricing:
    if p.settings is None:  # the reference: local and local-think on the A100, cloud per token
        return RoutePricing({r: "reference A100" for r in ROUTES if r != CLOUD},
                            {CLOUD: (p.cloud_model, p.cloud_prices[p.cloud_model])}, p.local_hardware.cny_per_month())
    settings = p.settings
    local_backend = settings.routes[LOCAL].backend
    hardware: dict[Route, str] = {}
    prices: dict[Route, tuple[str, Price]] = {}
    fixed: dict[str, float] = {}
    for route in ROUTES:
        backend = settings.routes[route].backend
        cfg = settings.backends[backend]
        if cfg.hardware is not None or backend == local_backend:
            hardware[route] = backend
            fixed[backend] = (cfg.hardware or REFERENCE_HARDWARE).cny_per_month()
        elif cfg.model in settings.prices:
            prices[route] = (cfg.model, settings.prices[cfg.model])
        else:
            raise ConfigError(f"prices: no price for route {route}'s model {cfg.model!r} (backends.{backend})")
    return RoutePricing(hardware, prices, sum(fixed.values()))


def monthly_for(requests: Sequence[SampleRequest], routes: Sequence[Route], rp: RoutePricing,
                traffic: Traffic) -> float:
    """The GPUs' fixed month plus the sample's mean per-token cost scaled to a month's calls."""
    variable = sum(rp.request_cny(r, q, traffic.output_tokens) for q, r in zip(requests, routes, strict=True))
    return rp.fixed_cny + traffic.calls_per_month * variable / len(requests)


def budget_thresholds(requests: Sequence[SampleRequest], rp: RoutePricing, traffic: Traffic, t1: float,
                      budget: float) -> BudgetResult:
    """The lowest t2 (the most cloud traffic) whose month stays within the budget on this sample.

    Candidates are the quantile thresholds of `threshold_for_share` for each cloud count, most cloud
    first; each is checked by re-deciding every request, so ties and interpolation cannot overshoot.
    t1 stays as configured unless it would pass t2. local-think shares the GPU, so t1 costs nothing.
    """
    scores = [q.score for q in requests]
    n = len(scores)
    if budget < rp.fixed_cny:
        return BudgetResult(budget, feasible=False,
                            note=f"the budget is below the GPUs' fixed {rp.fixed_cny:,.2f} CNY a month")
    # The most cloud requests the budget could pay for, counting the priciest-scored first.
    order = sorted(range(n), key=lambda i: -scores[i])
    scale = traffic.calls_per_month / n
    spent, k = rp.fixed_cny, 0
    for i in order:
        spent += scale * rp.request_cny(CLOUD, requests[i], traffic.output_tokens)
        if spent > budget:
            break
        k += 1
    for count in range(k, -1, -1):
        candidates = [round(threshold_for_share(scores, count / n), 6)]
        if count == n:
            candidates.insert(0, 0.0)  # t1 = t2 = 0: every request to the cloud
        if count == 0:
            candidates.append(1.0)
        for t2 in candidates:
            thresholds = Thresholds(min(t1, t2), t2)
            routes = [decide(s, thresholds) for s in scores]
            monthly = monthly_for(requests, routes, rp, traffic)
            if monthly <= budget * (1 + 1e-12):
                return BudgetResult(budget, feasible=True, t1=thresholds.t1, t2=t2,
                                    cloud_share=routes.count(CLOUD) / n,
                                    think_share=sum(r not in (LOCAL, CLOUD) for r in routes) / n,
                                    monthly_cny=monthly)
    return BudgetResult(budget, feasible=False, note="even t2 = 1.0 sends requests that the budget cannot pay for")


def score_sample(path: str, p: Pricing, on_bad: Callable[[int, str], None]) -> tuple[str, list[SampleRequest]]:
    from gateway.routing import build_scorer
    from router.learned import LearnedScorer

    scorer = build_scorer(p.settings) if p.settings is not None else LearnedScorer.from_paths()
    with open(path, encoding="utf-8") as fh:
        requests = [SampleRequest(scorer.score(row.get("messages") or []),
                                  round(approx_tokens(full_text(row.get("messages")))))
                    for _, row in read_jsonl(fh, on_bad)]
    if not requests:
        raise ValueError(f"{path}: the sample has no requests")
    return scorer.name, requests


def analyse_sample(path: str, p: Pricing, traffic: Traffic, budget: float | None,
                   on_bad: Callable[[int, str], None]) -> SampleResult:
    router_cfg = p.settings.router if p.settings is not None else RouterConfig()
    scorer_name, requests = score_sample(path, p, on_bad)
    rp = route_pricing(p)
    thresholds = Thresholds(router_cfg.t1, router_cfg.t2)
    routes = [decide(q.score, thresholds) for q in requests]
    n = len(requests)
    shares = []
    for route in ROUTES:
        mine = [q for q, r in zip(requests, routes, strict=True) if r == route]
        variable = sum(rp.request_cny(route, q, traffic.output_tokens) for q in mine)
        if route in rp.hardware:
            priced_as = f"GPU {rp.hardware[route]} (fixed)"
        else:
            model, price = rp.prices[route]
            priced_as = f"{model} {price.input:g}/{price.output:g} per M"
        shares.append(RouteShare(route=route, share=len(mine) / n, requests=len(mine),
                                 mean_prompt_tokens=sum(q.prompt_tokens for q in mine) / len(mine) if mine else 0.0,
                                 priced_as=priced_as, monthly_cny=traffic.calls_per_month * variable / n))
    result = SampleResult(path=path, requests=n, scorer=scorer_name, t1=thresholds.t1, t2=thresholds.t2,
                          routes=shares, fixed_cny=rp.fixed_cny, monthly_cny=monthly_for(requests, routes, rp, traffic))
    if budget is None:
        return result
    if budget < 0:
        raise ValueError("--budget-cny-month must be >= 0")
    return replace(result, budget=budget_thresholds(requests, rp, traffic, thresholds.t1, budget))
