"""What a simulated upstream does: its flavour (vLLM or DashScope), speed and failures.

Every knob is a plain field so tests can change it at run time through `POST /sim/config`.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Flavour = Literal["vllm", "dashscope"]

# Measured deployment: local vLLM on one A100 ~0.09 s to first token at ~75 tok/s;
# DashScope cloud ~1 s to first token at ~30 tok/s.
DEFAULTS: dict[Flavour, dict[str, Any]] = {
    "vllm": {"ttft_s": 0.09, "tokens_per_s": 75.0, "models": ["Qwen/Qwen3-8B"]},
    "dashscope": {"ttft_s": 1.0, "tokens_per_s": 30.0, "models": ["qwen3-235b-a22b", "qwen3-32b", "qwen3-8b"]},
}


@dataclass
class Behaviour:
    flavour: Flavour
    models: list[str] = field(default_factory=list)
    ttft_s: float = 0.0
    tokens_per_s: float = 0.0  # 0 or less: no pacing at all
    output_tokens: int = 48  # answer length when max_tokens does not cap it
    reasoning_tokens: int = 24  # thinking length when thinking is on
    error_rate: float = 0.0  # share of requests answered with error_status
    error_status: int = 500
    fail_next: int = 0  # the next N requests fail with error_status (deterministic, for tests)
    # A poison request: every request whose body contains this text fails with error_status, however
    # healthy the server is otherwise ("": none). What one client's bad request does to an upstream.
    fail_on: str = ""
    retry_after_s: float = 1.0  # Retry-After sent with a 429, as real rate limiters do; 0: none
    cut_after_tokens: int = -1  # >= 0: drop the connection mid-stream after N tokens
    hang_after_tokens: int = -1  # >= 0: stop sending (keep the connection open) after N tokens
    reasoning_field: str = ""  # vLLM >= 0.11 sends "reasoning"; older vLLM "reasoning_content"
    waiting_requests: int = 0  # vLLM flavour: added to the real queue GET /metrics reports (vllm:num_requests_waiting)
    # Capacity, as a real server has: above max_running requests wait (FIFO), as vLLM's --max-num-seqs makes
    # them; running requests share total_tokens_per_s, each min(tokens_per_s, total_tokens_per_s / running).
    max_running: int = 0  # 0: unlimited
    total_tokens_per_s: float = 0.0  # 0: unlimited (each request paced by tokens_per_s alone)
    # Quality: a request containing one of these keywords gets a weak answer (marked so the
    # simulator's judge can tell), as a small model is weak on some topics.
    weak_on: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.reasoning_field:
            self.reasoning_field = "reasoning" if self.flavour == "vllm" else "reasoning_content"

    @classmethod
    def for_flavour(cls, flavour: Flavour, zero_delay: bool = False, **overrides: Any) -> Behaviour:
        values = dict(DEFAULTS[flavour])
        if zero_delay:
            values.update(ttft_s=0.0, tokens_per_s=0.0)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(flavour=flavour, **values)

    def update(self, patch: dict[str, Any]) -> None:
        """Apply a partial update; unknown keys raise KeyError."""
        names = {f.name for f in fields(self)}
        for key, value in patch.items():
            if key not in names or key == "flavour":
                raise KeyError(key)
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def should_fail(self, raw: bytes = b"") -> bool:
        if self.fail_on and self.fail_on.encode() in raw:
            return True
        if self.fail_next > 0:
            self.fail_next -= 1
            return True
        return self.error_rate > 0 and random.random() < self.error_rate

    def serves(self, model: str) -> bool:
        if self.flavour == "dashscope":
            return model in self.models or model.startswith("qwen")
        return model in self.models

    def thinking_for(self, body: dict[str, Any]) -> bool:
        """Where each real server reads the thinking switch; Qwen3 thinks unless told not to."""
        if self.flavour == "vllm":
            kwargs = body.get("chat_template_kwargs") or {}
            return bool(kwargs.get("enable_thinking", True))
        return bool(body.get("enable_thinking", True))
