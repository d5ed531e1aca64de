"""Cost of a call in CNY from its usage and the configured per-model prices."""

from __future__ import annotations

from typing import Any

from gateway.settings import Price


def cost_cny(price: Price | None, usage: dict[str, Any] | None) -> float | None:
    """None when the model has no configured price or the upstream reported no usage."""
    if price is None or not usage:
        return None
    prompt = usage.get("prompt_tokens") or 0
    completion = usage.get("completion_tokens") or 0
    return (prompt * price.input + completion * price.output) / 1_000_000
