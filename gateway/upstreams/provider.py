"""LiteLLM as the provider adapter: URL, auth headers and parameter mapping per backend.

LiteLLM's provider config (`HostedVLLMChatConfig`, `DashScopeChatConfig`, ...) is resolved once
at start-up; per request only its `map_openai_params` and `transform_request` run (a few
microseconds). The bytes are then sent by a pooled transport (see http_transport.py), which is
what keeps the gateway's own overhead near a millisecond instead of LiteLLM's full call path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from gateway.passthrough import OPENAI_FIELDS, allowed_for
from gateway.protocol import ChatCompletionRequest
from gateway.settings import BackendConfig
from gateway.upstreams.thinking import apply_thinking

# Fields the gateway handles itself and never forwards as they came.
_GATEWAY_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "enable_thinking", "reasoning_effort",
     "chat_template_kwargs", "rag", "cache"}
)


_DECLARED = frozenset(ChatCompletionRequest.model_fields)


def import_litellm() -> Any:
    """Import LiteLLM offline: without this it fetches its price map from the network at import."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


@dataclass(frozen=True)
class ProviderAdapter:
    backend: str
    provider: str
    model: str
    api_base: str
    url: str
    headers: dict[str, str]
    supported: frozenset[str]
    config: Any = field(repr=False)
    passthrough: frozenset[str] = frozenset()  # non-OpenAI fields this backend is sent (gateway/passthrough.py)
    api_key: str | None = field(default=None, repr=False)

    @property
    def litellm_model(self) -> str:
        return f"{self.provider}/{self.model}"

    def build_body(self, data: dict[str, Any], thinking: bool, stream: bool) -> dict[str, Any]:
        """The upstream request body for this provider.

        Standard OpenAI parameters go through LiteLLM's mapping for the provider; other OpenAI
        fields, and extras on this backend's pass-through list (vLLM's `top_k`, DashScope's
        `top_k`, ...), pass through unchanged; any other extra is left out. Usage is
        always requested on streams so cost can be recorded; the gateway strips it again if
        the client did not ask.
        """
        standard: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        for key, value in data.items():
            if key in _GATEWAY_FIELDS or value is None:
                continue
            if key in self.supported:
                standard[key] = value
            elif key in self.passthrough or key in OPENAI_FIELDS or key in _DECLARED:
                extras[key] = value
        optional = self.config.map_openai_params(standard, {}, self.model, True)
        body = self.config.transform_request(self.model, data["messages"], optional, {}, {})
        body.update(extras)
        passthrough = data.get("chat_template_kwargs")
        if passthrough:
            body["chat_template_kwargs"] = dict(passthrough)
        apply_thinking(body, self.provider, thinking)
        body["stream"] = stream
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body


def resolve_adapter(name: str, cfg: BackendConfig, base: str | None = None) -> ProviderAdapter:
    """The adapter for one of the backend's base URLs (the first when not given)."""
    litellm = import_litellm()
    from litellm.utils import ProviderConfigManager

    api_key = cfg.api_key.get_secret_value() if cfg.api_key else None
    given = base if base is not None else cfg.api_bases()[0]
    _, provider, _, default_base = litellm.get_llm_provider(
        f"{cfg.provider}/{cfg.model}", api_base=given, api_key=api_key
    )
    api_base = given or default_base
    if not api_base:
        raise ValueError(f"backends.{name}.api_base: required for provider {cfg.provider}")
    config = ProviderConfigManager.get_provider_chat_config(
        model=cfg.model, provider=litellm.LlmProviders(provider)
    )
    if config is None:
        raise ValueError(f"backends.{name}.provider: LiteLLM has no chat config for {cfg.provider}")
    url = config.get_complete_url(
        api_base=api_base, api_key=api_key, model=cfg.model, optional_params={}, litellm_params={}
    )
    headers = config.validate_environment(
        headers={}, model=cfg.model, messages=[], optional_params={}, litellm_params={},
        api_key=api_key, api_base=api_base,
    )
    supported = frozenset(config.get_supported_openai_params(cfg.model)) - {"reasoning_effort", "thinking"}
    return ProviderAdapter(
        backend=name, provider=provider, model=cfg.model, api_base=api_base.rstrip("/"), url=url,
        headers={k.lower(): v for k, v in headers.items()}, supported=supported, config=config,
        api_key=api_key, passthrough=allowed_for(cfg),
    )
