"""The simulator as a judge, and as a model that is weak on some topics.

A simulated model whose `weak_on` keywords appear in the request starts its answer with WEAK_MARKER,
a stand-in for a wrong answer. Asked to judge (the gateway's pairwise or rubric prompt), the simulator
prefers the answer without the marker and ties when both or neither carry it, so the shadow loop
(sample, judge, retrain, swap) can be exercised end to end without a real model.
"""

from __future__ import annotations

import re
from typing import Any

WEAK_MARKER = "Unsure:"
_PAIRWISE = re.compile(r"\[Answer A\]\n(?P<a>.*?)\n\n\[Answer B\]\n(?P<b>.*)\Z", re.DOTALL)
_SINGLE = re.compile(r"\[Answer\]\n(?P<a>.*)\Z", re.DOTALL)


def _messages(body: dict[str, Any]) -> tuple[str, str]:
    system, user = "", ""
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            continue
        if message.get("role") == "system":
            system = message["content"]
        elif message.get("role") == "user":
            user = message["content"]
    return system, user


def judge_reply(body: dict[str, Any]) -> str | None:
    """The judge's one-word (or one-number) reply when the request is a judging prompt, else None."""
    system, user = _messages(body)
    if "impartial judge" not in system:
        return None
    pair = _PAIRWISE.search(user)
    if pair:
        weak_a, weak_b = WEAK_MARKER in pair["a"], WEAK_MARKER in pair["b"]
        return "TIE" if weak_a == weak_b else ("B" if weak_a else "A")
    single = _SINGLE.search(user)
    if single:
        return "3" if WEAK_MARKER in single["a"] else "8"
    return None


def is_weak_on(request_text: str, keywords: list[str]) -> bool:
    lowered = request_text.lower()
    return any(k and k.lower() in lowered for k in keywords)
