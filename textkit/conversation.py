"""What the router reads of a conversation: the current ask, the earlier turns, image count.

Everything is bounded: texts are cut to `MAX_CHARS` so a 100,000-character prompt costs the
same as a long normal one, and lone surrogates or other non-UTF-8 survivors are replaced so no
later step can raise on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_CHARS = 2000  # head of the text that is analysed
TAIL_CHARS = 400  # plus its tail: instructions often come last


@dataclass(frozen=True)
class Conversation:
    ask: str  # the last user message (text parts only)
    context: str  # earlier user/assistant turns, newest last
    turns: int  # user turns in the conversation
    images: int  # image parts anywhere in user messages
    system: str  # system/developer instructions
    total_chars: int  # length of the ask before cutting


def clean(text: str) -> str:
    """Drop characters that cannot be encoded (lone surrogates) and bound the length."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    if len(text) > MAX_CHARS + TAIL_CHARS:
        text = text[:MAX_CHARS] + "\n" + text[-TAIL_CHARS:]
    return text


_IMAGE_PARTS = ("image_url", "input_image", "image")


def _content_text(content: Any) -> tuple[str, int]:
    if isinstance(content, str):
        return content, 0
    if isinstance(content, list):
        texts, images = [], 0
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind in ("text", "input_text") and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in _IMAGE_PARTS:
                images += 1
        return "\n".join(texts), images
    return "", 0


def read_conversation(messages: Any) -> Conversation:
    """Never raises: anything unexpected reads as empty text."""
    if not isinstance(messages, list):
        messages = []
    asks: list[str] = []
    others: list[str] = []
    system: list[str] = []
    images = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        text, n_images = _content_text(message.get("content"))
        role = message.get("role")
        if role == "user":
            images += n_images
            asks.append(text)
        elif role in ("system", "developer"):
            system.append(text)
        else:
            others.append(text)
    ask = asks[-1] if asks else ""
    earlier = [*asks[:-1], *others]
    return Conversation(
        ask=clean(ask.strip()),
        context=clean("\n".join(t for t in earlier if t)[-2000:]),
        turns=len(asks),
        images=images,
        system=clean("\n".join(system))[:1000],
        total_chars=len(ask),
    )


def has_images(messages: Any) -> bool:
    """Does any message carry an image part? (Such a request must reach a vision-capable model.)"""
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") in _IMAGE_PARTS for p in content):
            return True
    return False


def full_text(messages: Any) -> str:
    """Every text part of every message, unbounded: what an upstream is sent and bills as prompt
    tokens (for estimates; the router reads the bounded `read_conversation` instead)."""
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(parts)
