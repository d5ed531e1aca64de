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
