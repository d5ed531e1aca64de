"""Pure pieces: breaker state machine, thresholds, placeholder scorer, thinking helpers."""

from __future__ import annotations

import orjson
import pytest

from gateway.upstreams.breaker import BreakerState, CircuitBreaker
from gateway.upstreams.thinking import apply_thinking, normalize_chunk, requested_thinking
from router.decide import Thresholds, decide
from router.length import LengthScorer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_closes():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, reset_after_s=5, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    clock.now = 5.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    clock.now = 10.0
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED and b.allow() and b.consecutive_failures == 0


def test_success_resets_the_count():
    b = CircuitBreaker(failure_threshold=2, reset_after_s=5)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state is BreakerState.CLOSED


@pytest.mark.parametrize(("score", "route"), [(0.0, "local"), (0.34, "local"), (0.35, "local-think"),
                                              (0.7, "local-think"), (0.71, "cloud"), (1.0, "cloud")])
def test_two_thresholds(score, route):
    assert decide(score, Thresholds(0.35, 0.7)) == route


@pytest.mark.parametrize(("score", "route"), [(0.49, "local"), (0.5, "cloud"), (0.9, "cloud")])
def test_single_threshold_has_no_middle_tier(score, route):
    assert decide(score, Thresholds(0.5, 0.5)) == route


def test_thresholds_validated():
    with pytest.raises(ValueError):
        Thresholds(0.8, 0.2)


def test_length_scorer_handles_odd_content():
    s = LengthScorer()
    assert s.score([]) == 0.0
    assert s.score([{"role": "user", "content": None}]) == 0.0
    parts = [{"type": "text", "text": "描述这张图"}, {"type": "image_url", "image_url": {"url": "x"}}]
    assert 0 < s.score([{"role": "user", "content": parts}]) < 0.1
    assert s.score([{"role": "user", "content": "字" * 10_000}]) == 1.0


def test_requested_thinking_dialects():
    assert requested_thinking({}) is None
    assert requested_thinking({"reasoning_effort": "low"}) is True
    assert requested_thinking({"reasoning_effort": "minimal"}) is False
    assert requested_thinking({"chat_template_kwargs": {"enable_thinking": False}}) is False


def test_apply_thinking_per_provider():
    vllm = {"reasoning_effort": "high", "enable_thinking": True}
    apply_thinking(vllm, "hosted_vllm", False)
    assert vllm == {"chat_template_kwargs": {"enable_thinking": False}}
    ds = {"chat_template_kwargs": {"enable_thinking": False}}
    apply_thinking(ds, "dashscope", True)
    assert ds == {"enable_thinking": True}


def test_normalize_chunk_only_touches_reasoning():
    plain = b'{"choices":[{"delta":{"content":"hi"}}]}'
    assert normalize_chunk(plain) is plain
    out = orjson.loads(normalize_chunk(b'{"choices":[{"delta":{"reasoning":"hm","content":null}}]}'))
    assert out["choices"][0]["delta"] == {"reasoning_content": "hm", "content": None}



def test_length_scorer_reads_only_a_bounded_prefix():
    """Scoring cost must not grow with the prompt: text past the saturation point is never read."""
    from router import length

    s = LengthScorer()
    assert s.score([{"role": "user", "content": "a" * 100_000 + "字" * 100_000}]) == 1.0
    # The prefix it reads already saturates for any text, CJK or not.
    assert length.approx_tokens("a" * length._MAX_CHARS) / length._SATURATION_TOKENS >= 1.0


def test_token_cost_uses_the_cached_price_for_cached_prompt_tokens():
    from gateway.cost import TokenUsage, token_cost
    from gateway.settings import Price

    usage = TokenUsage.from_openai({"prompt_tokens": 1000, "completion_tokens": 200,
                                    "prompt_tokens_details": {"cached_tokens": 600},
                                    "completion_tokens_details": {"reasoning_tokens": 50}})
    assert usage == TokenUsage(prompt=1000, completion=200, reasoning=50, cached_prompt=600)
    price = Price(input=4, output=8, cached_input=1.6)
    assert token_cost(price, usage) == pytest.approx((400 * 4 + 600 * 1.6 + 200 * 8) / 1e6)
    assert token_cost(Price(input=4, output=8), usage) == pytest.approx((1000 * 4 + 200 * 8) / 1e6)
    assert TokenUsage.from_openai(None) is None
    assert TokenUsage.from_openai({"prompt_tokens": "x"}) == TokenUsage(0, 0)


def test_hardware_cost_formula_and_share():
    from gateway.cost import hardware_cost
    from gateway.settings import HardwareCost

    a100 = HardwareCost(gpu_price_cny=60000, amortise_years=3)
    assert a100.cny_per_month() == pytest.approx(60000 / 36, rel=0.001)  # the reference's ~1,667 CNY a month
    powered = HardwareCost(gpu_price_cny=60000, amortise_years=3, gpus=2, power_watts=400, electricity_cny_per_kwh=0.7)
    assert powered.cny_per_second() == pytest.approx(2 * (60000 / (3 * 365.25 * 86400) + 0.4 * 0.7 / 3600))
    assert hardware_cost(a100, 2.0, 1.0) == pytest.approx(2 * a100.cny_per_second())
    assert hardware_cost(a100, 2.0, 4.0) == pytest.approx(0.5 * a100.cny_per_second())  # a quarter of the GPU
    assert hardware_cost(a100, 2.0, 0.2) == hardware_cost(a100, 2.0, 1.0)  # never more than the whole GPU


def test_backend_load_measures_the_mean_concurrency_over_a_request():
    from gateway.upstreams.load import BackendLoad

    clock = FakeClock()
    load = BackendLoad(clock)
    a = load.enter()  # t=0: alone
    clock.now = 1.0
    b = load.enter()  # t=1..3: two in flight
    clock.now = 3.0
    assert load.leave(b) == (2.0, 2.0)
    clock.now = 4.0  # t=3..4: alone again
    busy, mean = load.leave(a)
    assert busy == 4.0 and mean == pytest.approx((1 + 2 * 2 + 1) / 4)
    assert load.in_flight == 0
