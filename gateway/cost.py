"""What a request cost in CNY, and what it would have cost on the cloud route.

Cloud backends are priced per token as the provider bills (`prices` by model id). Self-hosted
backends with a `hardware` cost model are priced by their share of the hardware: the seconds a
request occupied the backend times its cost per second, divided by the mean number of requests
running beside it. The counterfactual prices the same tokens at the cloud route's prices, so
savings are `cloud_equivalent - cost`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.settings import HardwareCost, Price, Settings
from router.routes import CLOUD

_MILLION = 1_000_000


@dataclass(frozen=True)
class TokenUsage:
    prompt: int
    completion: int  # includes reasoning, as OpenAI-style usage counts it
    reasoning: int = 0
    cached_prompt: int = 0
    estimated: bool = False  # counted by the gateway because the upstream sent no usage

    @classmethod
    def from_openai(cls, usage: Any) -> TokenUsage | None:
        """Read an OpenAI-shaped usage object; None when there is none."""
        if not isinstance(usage, dict):
            return None
        details = usage.get("completion_tokens_details") or {}
        cached = usage.get("prompt_tokens_details") or {}
        return cls(prompt=_int(usage.get("prompt_tokens")), completion=_int(usage.get("completion_tokens")),
                   reasoning=_int(details.get("reasoning_tokens") if isinstance(details, dict) else 0),
                   cached_prompt=_int(cached.get("cached_tokens") if isinstance(cached, dict) else 0))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def token_cost(price: Price, usage: TokenUsage) -> float:
    cached = min(usage.cached_prompt, usage.prompt)
    cached_price = price.cached_input if price.cached_input is not None else price.input
    return ((usage.prompt - cached) * price.input + cached * cached_price + usage.completion * price.output) / _MILLION


def hardware_cost(hardware: HardwareCost, busy_s: float, mean_concurrency: float) -> float:
    """This request's share of the hardware: its seconds on the backend over the requests sharing it."""
    return hardware.cny_per_second() * max(busy_s, 0.0) / max(mean_concurrency, 1.0)


class CostModel:
    """Prices calls with the configured token prices and hardware cost models."""

    def __init__(self, settings: Settings) -> None:
        self._prices = settings.prices
        self._hardware = {name: cfg.hardware for name, cfg in settings.backends.items() if cfg.hardware}
        cloud_model = settings.backends[settings.routes[CLOUD].backend].model
        self.cloud_price = settings.prices.get(cloud_model)

    def cost(self, backend: str, model: str, usage: TokenUsage | None, busy_s: float,
             mean_concurrency: float) -> float | None:
        """None when nothing prices this call (no hardware model, no price, or no usage)."""
        hardware = self._hardware.get(backend)
        if hardware is not None:
            return hardware_cost(hardware, busy_s, mean_concurrency)
        price = self._prices.get(model)
        if price is None or usage is None:
            return None
        return token_cost(price, usage)

    def cloud_equivalent(self, usage: TokenUsage | None) -> float | None:
        """The same tokens at the cloud route's prices."""
        if self.cloud_price is None or usage is None:
            return None
        return token_cost(self.cloud_price, usage)
