"""The re-implemented LiteLLM complexity_router heuristic used as a benchmark baseline."""

from __future__ import annotations

from benchmarks.litellm_complexity import TIER_ROUTE, classify


def test_greeting_is_simple():
    tier, score = classify("hi, what is the capital of France?")
    assert tier == "SIMPLE" and score < 0.15


def test_code_alone_is_medium_and_code_plus_technical_terms_complex():
    tier, score = classify("Implement a python function that queries the database api and handle the error, "
                           "then refactor the class.")
    assert tier == "MEDIUM" and abs(score - 0.30) < 1e-9  # 2+ code keywords: the full 0.30 weight
    tier, score = classify("Implement a python api for our distributed microservice architecture with low "
                           "latency and high throughput.")
    assert tier == "COMPLEX" and abs(score - 0.55) < 1e-9


def test_two_reasoning_markers_promote_when_score_clears_the_floor():
    tier, _ = classify("Think through this step by step and evaluate the options: implement it in python.")
    assert tier == "REASONING"
    tier, score = classify("hi! step by step, think through")  # short and "simple": under the 0.15 floor
    assert tier != "REASONING" and score < 0.15


def test_word_boundaries_and_tier_routes():
    assert classify("the capital of Peru")[1] == classify("the city of Peru")[1]  # "api" not in "capital"
    assert TIER_ROUTE["SIMPLE"] == "local" and TIER_ROUTE["REASONING"] == "cloud"
