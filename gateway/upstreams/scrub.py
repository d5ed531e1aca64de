"""Secrets out of upstream error text before it reaches a client or a log: some upstreams echo the
Authorization header or the key they were given (`Incorrect API key provided: Bearer sk-...`)."""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_MESSAGE = 500
REDACTED = "[redacted]"
_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=*-]+"),
    re.compile(r"\b(?:sk|pk|rk|ak)-[A-Za-z0-9_*.-]{4,}"),
    re.compile(r"(?i)\b(api[_-]?key|x-api-key|authorization|access[_-]?token|token|secret)(\"?\s*[:=]\s*\"?)"
               r"[^\s\"',;}]+"),
)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with known secrets and anything shaped like a key or bearer token replaced, capped in length."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _PATTERNS[0].sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _PATTERNS[1].sub(REDACTED, text)
    text = _PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."
