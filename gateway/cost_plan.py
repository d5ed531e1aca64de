"""The monthly cost plan: cloud models per token against the local GPU's fixed month, and the
design's plan (local for most traffic, the cloud for a share), computed from prices, hardware and
traffic, never copied. Also checks the reference design's own table, which does not add up.

Cloud models cost per token (the gateway's own formula, gateway/cost.py); the local GPU costs the
same every month, busy or idle (`HardwareCost`); the reference's prices and A100 stand in when no
config is given. `qroute cost` renders it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.cost import TokenUsage, token_cost
from gateway.settings import ConfigError, HardwareCost, Price, Settings, load_settings
from router.routes import CLOUD, LOCAL

if TYPE_CHECKING:
    from gateway.cost_sample import SampleResult

# The reference design's cloud prices, CNY per million input/output tokens; its cloud is the 72b class.
REFERENCE_PRICES: dict[str, Price] = {
    "qwen3-8b": Price(input=0.3, output=0.6),
    "qwen3-32b": Price(input=2.0, output=4.0),
    "qwen3-72b": Price(input=4.0, output=8.0),
}
REFERENCE_CLOUD_MODEL = "qwen3-72b"
REFERENCE_HARDWARE = HardwareCost()  # an A100 at 60,000 CNY written off over 3 years
REFERENCE_MONTHLY_FACTOR = 10  # the reference's monthly column over its per-10,000-calls column
CONCURRENCY_LEVELS = (1, 3, 8)
MILLION = 1_000_000
_DAY_S = 86400


@dataclass(frozen=True)
class Traffic:
    calls_per_day: float
    output_tokens: int
    input_tokens: int
    days_per_month: float

    @property
    def calls_per_month(self) -> float:
        return self.calls_per_day * self.days_per_month

    def validate(self) -> None:
        if self.calls_per_day < 0 or self.output_tokens < 0 or self.input_tokens < 0:
            raise ValueError("--calls-per-day, --output-tokens and --input-tokens must be >= 0")
        if self.days_per_month <= 0:
            raise ValueError("--days-per-month must be > 0")


@dataclass(frozen=True)
class CloudOption:
    model: str
    input_cny_per_million: float
    output_cny_per_million: float
    per_call_cny: float
    per_10k_calls_cny: float
    monthly_cny: float
    break_even_calls_per_day: float | None  # None: this model costs nothing per call, so never
    break_even_concurrency: float | None  # requests running at once on the GPU at that traffic


@dataclass(frozen=True)
class LocalOption:
    source: str  # which backend's `hardware:`, or the reference A100
    hardware: dict[str, float]
    cny_per_second: float
    monthly_cny: float


@dataclass(frozen=True)
class Plan:
    cloud_model: str
    cloud_share: float
    local_cny: float  # fixed: the GPU is paid for whatever it serves
    cloud_cny: float
    monthly_cny: float
    all_cloud_cny: float
    saved_cny: float
    local_calls_per_day: float
    local_concurrency: float  # mean requests at once on the GPU for the local share


@dataclass(frozen=True)
class ConcurrencyCost:
    concurrent: int
    cny_per_million_output_tokens: float


@dataclass(frozen=True)
class ReferenceCheck:
    factor: float  # per month over per 10,000 calls, from the inputs
    reference_factor: float
    understated_by: float
    note: str


@dataclass(frozen=True)
class CostAnalysis:
    traffic: Traffic
    prices_from: str
    cloud: list[CloudOption]
    local: LocalOption
    plan: Plan
    reference_check: ReferenceCheck
    local_tokens_per_second: float
    concurrency: list[ConcurrencyCost]
    notes: list[str] = field(default_factory=list)
    sample: SampleResult | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["traffic"]["calls_per_month"] = self.traffic.calls_per_month
        return out


# --- the arithmetic ---------------------------------------------------------------------------
def per_call_cny(price: Price, input_tokens: int, output_tokens: int) -> float:
    """The gateway's own per-token formula, so the analysis and the bills agree."""
    return token_cost(price, TokenUsage(prompt=input_tokens, completion=output_tokens))


def cloud_option(model: str, price: Price, traffic: Traffic, local_monthly: float,
                 tokens_per_second: float) -> CloudOption:
    per_call = per_call_cny(price, traffic.input_tokens, traffic.output_tokens)
    break_even = local_monthly / (per_call * traffic.days_per_month) if per_call > 0 else None
    load = (break_even * traffic.output_tokens / _DAY_S / tokens_per_second) if break_even is not None else None
    return CloudOption(model=model, input_cny_per_million=price.input, output_cny_per_million=price.output,
                       per_call_cny=per_call, per_10k_calls_cny=per_call * 10_000,
                       monthly_cny=per_call * traffic.calls_per_month, break_even_calls_per_day=break_even,
                       break_even_concurrency=load)


def local_option(hardware: HardwareCost, source: str) -> LocalOption:
    return LocalOption(source=source, hardware=hardware.model_dump(), cny_per_second=hardware.cny_per_second(),
                       monthly_cny=hardware.cny_per_month())


def plan(cloud: CloudOption, local: LocalOption, traffic: Traffic, share: float, tokens_per_second: float) -> Plan:
    cloud_part = share * cloud.monthly_cny
    local_calls = (1 - share) * traffic.calls_per_day
    return Plan(cloud_model=cloud.model, cloud_share=share, local_cny=local.monthly_cny, cloud_cny=cloud_part,
                monthly_cny=local.monthly_cny + cloud_part, all_cloud_cny=cloud.monthly_cny,
                saved_cny=cloud.monthly_cny - local.monthly_cny - cloud_part, local_calls_per_day=local_calls,
                local_concurrency=local_calls * traffic.output_tokens / _DAY_S / tokens_per_second)


def concurrency_costs(local: LocalOption, tokens_per_second: float) -> list[ConcurrencyCost]:
    """A request is charged its busy seconds over the requests sharing the GPU: per million output
    tokens that is 1e6 / tokens-per-second seconds, divided by the concurrency."""
    busy_s = MILLION / tokens_per_second
    return [ConcurrencyCost(c, local.cny_per_second * busy_s / c) for c in CONCURRENCY_LEVELS]


def reference_check(traffic: Traffic) -> ReferenceCheck:
    factor = traffic.calls_per_month / 10_000
    ratio = factor / REFERENCE_MONTHLY_FACTOR
    note = (f"The reference table does not add up: its monthly column is {REFERENCE_MONTHLY_FACTOR} x its "
            f"per-10,000-calls column, which is the cost of 100,000 calls once. {amount(traffic.calls_per_day)} calls "
            f"a day for {amount(traffic.days_per_month)} days is {amount(traffic.calls_per_month)} calls a month, "
            f"{amount(factor)} x the per-10,000-calls cost, so the reference's monthly figures are {ratio:,.4g} times "
            f"too low. The monthly figures here use {amount(factor)} x.")
    return ReferenceCheck(factor=factor, reference_factor=REFERENCE_MONTHLY_FACTOR, understated_by=ratio, note=note)


# --- from the config ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Pricing:
    """What the analysis prices with: per-token models, the local GPU, the cloud route's model."""

    cloud_prices: dict[str, Price]
    cloud_model: str
    local_hardware: HardwareCost
    local_source: str
    prices_from: str
    settings: Settings | None


def pricing(config: str | None) -> Pricing:
    if config is None:
        return Pricing(dict(REFERENCE_PRICES), REFERENCE_CLOUD_MODEL, REFERENCE_HARDWARE,
                       "reference A100 (60,000 CNY over 3 years)", "the reference design's (no --config)", None)
    settings = load_settings(config)
    local_backend = settings.routes[LOCAL].backend
    self_hosted = {cfg.model for name, cfg in settings.backends.items() if cfg.hardware or name == local_backend}
    cloud_prices = {model: price for model, price in settings.prices.items() if model not in self_hosted}
    cloud_model = settings.backends[settings.routes[CLOUD].backend].model
    if cloud_model not in settings.prices:
        raise ConfigError(f"prices: no price for the cloud route's model {cloud_model!r}")
    cloud_prices.setdefault(cloud_model, settings.prices[cloud_model])
    hardware = settings.backends[local_backend].hardware
    source = f"backends.{local_backend}.hardware"
    if hardware is None:
        hardware, source = REFERENCE_HARDWARE, f"reference A100 (backends.{local_backend} has no hardware:)"
    return Pricing(cloud_prices, cloud_model, hardware, source, f"{config} (prices:)", settings)


def analyse(p: Pricing, traffic: Traffic, cloud_share: float, tokens_per_second: float) -> CostAnalysis:
    if not 0.0 <= cloud_share <= 1.0:
        raise ValueError("--cloud-share must be between 0 and 1")
    if tokens_per_second <= 0:
        raise ValueError("--local-tokens-per-second must be > 0")
    traffic.validate()
    local = local_option(p.local_hardware, p.local_source)
    options = [cloud_option(model, price, traffic, local.monthly_cny, tokens_per_second)
               for model, price in sorted(p.cloud_prices.items(), key=lambda kv: (kv[1].output, kv[1].input, kv[0]))]
    cloud = next(o for o in options if o.model == p.cloud_model)
    notes = []
    if traffic.input_tokens == 0:
        notes.append("input tokens are 0 by default because the reference counts output tokens only; "
                     "set --input-tokens to price prompts too")
    return CostAnalysis(traffic=traffic, prices_from=p.prices_from, cloud=options, local=local,
                        plan=plan(cloud, local, traffic, cloud_share, tokens_per_second),
                        reference_check=reference_check(traffic), local_tokens_per_second=tokens_per_second,
                        concurrency=concurrency_costs(local, tokens_per_second), notes=notes)


def amount(value: float) -> str:
    """A count or CNY amount as the reports print it: 100,000 or 1,666.67."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"
