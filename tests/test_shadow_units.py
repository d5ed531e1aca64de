"""Shadow labelling's pieces: the judge's prompts and parsing (asked twice, swapped), and sampling
that holds the share on average while favouring the thresholds."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.judge import JUDGE_SYSTEM, judge_pair, pairwise_messages, parse_choice, parse_rating
from gateway.shadow import NEAR_WEIGHT, band_of, weight
from router.decide import Thresholds


@pytest.mark.parametrize(("reply", "choice"), [("A", "A"), ("b", "B"), ("**A** is better", "A"), ("TIE", "TIE"),
                                               ("Answer B.", "B"), ("tie - both fine", "TIE"), ("neither", None),
                                               ("", None)])
def test_parse_choice(reply, choice):
    assert parse_choice(reply) == choice


def test_parse_rating():
    assert parse_rating("8") == 8 and parse_rating("I give it 10/10") == 10 and parse_rating("none") is None


def _judge(replies: list[str]):
    asked: list[list[dict[str, str]]] = []

    async def ask(messages):
        asked.append(messages)
        return replies[len(asked) - 1]

    return ask, asked


@pytest.mark.parametrize(("first", "second", "verdict"), [
    ("A", "B", "local"),   # local was A the first time and B the second: it won both
    ("B", "A", "cloud"),
    ("A", "A", "tie"),     # position bias: each answer won once, so neither did
    ("TIE", "TIE", "tie"),
])
def test_pairwise_is_asked_twice_with_the_answers_swapped(first, second, verdict):
    ask, asked = _judge([first, second])
    judged = asyncio.run(judge_pair(ask, "pairwise", "2+2?", "local says 4", "cloud says 4"))
    assert judged is not None and judged.verdict == verdict and judged.calls == 2
    assert asked[0][0]["content"] == JUDGE_SYSTEM
    assert asked[0][1]["content"].index("local says 4") < asked[0][1]["content"].index("cloud says 4")
    assert asked[1][1]["content"].index("cloud says 4") < asked[1][1]["content"].index("local says 4")


def test_unreadable_judging_gives_no_verdict():
    ask, _ = _judge(["I cannot decide", "A"])
    assert asyncio.run(judge_pair(ask, "pairwise", "q", "x", "y")) is None


def test_rubric_scores_each_answer_on_its_own():
    ask, asked = _judge(["3", "9"])
    judged = asyncio.run(judge_pair(ask, "rubric", "q", "local", "cloud"))
    assert judged is not None and judged.verdict == "cloud" and len(asked) == 2


def test_sampling_keeps_the_share_and_favours_the_thresholds():
    from gateway.settings import ShadowConfig
    from gateway.shadow import Shadow

    recorded: list[str] = []
    shadow = Shadow(ShadowConfig(share=0.1), host=None, link=None,  # type: ignore[arg-type]
                    record=lambda event, *rest: recorded.append(event), rng=random.Random(0))
    t = Thresholds(0.6, 0.8)
    rng = random.Random(1)
    scores = [rng.random() for _ in range(40000)]
    picked = [s for s in scores if shadow.wants(s, t)]
    assert 0.085 < len(picked) / len(scores) < 0.115  # the share, on average
    near = [s for s in picked if min(abs(s - 0.6), abs(s - 0.8)) <= 0.1]
    near_all = [s for s in scores if min(abs(s - 0.6), abs(s - 0.8)) <= 0.1]
    far_rate = (len(picked) - len(near)) / (len(scores) - len(near_all))
    assert len(near) / len(near_all) > 3 * far_rate  # NEAR_WEIGHT times likelier near a threshold
    assert weight(0.65, t) == NEAR_WEIGHT and weight(0.2, t) == 1.0
    assert band_of(0.0) == "0.0-0.1" and band_of(1.0) == "0.9-1.0"
    assert pairwise_messages("q", "a", "b")[1]["content"].startswith("[Request]")
