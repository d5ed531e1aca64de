"""Which of two answers to the same request is better: the judge behind shadow labelling.

Pairwise (the default): the judge sees the request and both answers and says A, B or TIE; it is asked
twice with the answers swapped, because judges favour a position, and only an answer that wins both
times wins (otherwise: a tie). Rubric: each answer is scored 1-10 on its own; the higher wins.
The judge is the cloud route's model, or any OpenAI-compatible endpoint (`router.shadow.judge`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["local", "cloud", "tie"]
Ask = Callable[[list[dict[str, str]]], Awaitable[str]]  # chat messages -> the judge's reply text

JUDGE_SYSTEM = ("You are an impartial judge. Compare two answers to the same user request and decide which "
                "is better: more correct, more complete, more helpful. Ignore length and style unless they "
                "matter to the request. Reply with exactly one word: A, B or TIE.")
RUBRIC_SYSTEM = ("You are an impartial judge. Rate the answer to the user's request from 1 (useless or wrong) "
                 "to 10 (correct, complete and helpful). Reply with the number only.")
_CHOICE = re.compile(r"\b(TIE|A|B)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\b(10|[1-9])\b")
_MAX_CHARS = 6000  # of each text shown to the judge


@dataclass(frozen=True)
class Judged:
    verdict: Verdict
    calls: int  # judge calls made


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_CHARS else text[:_MAX_CHARS] + "\n[...]"


def pairwise_messages(request: str, first: str, second: str) -> list[dict[str, str]]:
    user = f"[Request]\n{_clip(request)}\n\n[Answer A]\n{_clip(first)}\n\n[Answer B]\n{_clip(second)}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def rubric_messages(request: str, answer: str) -> list[dict[str, str]]:
    user = f"[Request]\n{_clip(request)}\n\n[Answer]\n{_clip(answer)}"
    return [{"role": "system", "content": RUBRIC_SYSTEM}, {"role": "user", "content": user}]


def parse_choice(reply: str) -> str | None:
    """A, B or TIE from the judge's reply (the first one it names), else None."""
    match = _CHOICE.search(reply or "")
    return match.group(1).upper() if match else None


def parse_rating(reply: str) -> int | None:
    match = _NUMBER.search(reply or "")
    return int(match.group(1)) if match else None


async def judge_pair(ask: Ask, method: str, request: str, local: str, cloud: str) -> Judged | None:
    """The verdict, or None when the judge's replies could not be read (no row is written then)."""
    if method == "rubric":
        local_score = parse_rating(await ask(rubric_messages(request, local)))
        cloud_score = parse_rating(await ask(rubric_messages(request, cloud)))
        if local_score is None or cloud_score is None:
            return None
        verdict: Verdict = "tie" if local_score == cloud_score else ("local" if local_score > cloud_score else "cloud")
        return Judged(verdict, 2)
    first = parse_choice(await ask(pairwise_messages(request, local, cloud)))  # local is A
    second = parse_choice(await ask(pairwise_messages(request, cloud, local)))  # local is B
    if first is None or second is None:
        return None
    as_first = {"A": "local", "B": "cloud", "TIE": "tie"}[first]
    as_second = {"A": "cloud", "B": "local", "TIE": "tie"}[second]
    return Judged(as_first if as_first == as_second else "tie", 2)  # type: ignore[arg-type]
