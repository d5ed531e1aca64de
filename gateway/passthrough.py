"""Which request fields beyond OpenAI's reach a backend, and what JSON type each must have.

Every unknown field used to be forwarded, `chat_template` (client-chosen Jinja run by vLLM)
included. Now a field that is neither an OpenAI chat field nor on some backend's allow-list
(`backends.<name>.passthrough`, default per provider below) is a 400 `unknown_parameter`; one
that is allowed on some backends only is forwarded to those only. Values are type-checked here
because they skip the request model: "20" is not an integer for top_k, as "false" is not a
boolean for enable_thinking (the upstream would read it as true).
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest
from gateway.settings import BackendConfig

# vLLM's extra sampling and chat parameters (docs: OpenAI-compatible server, "Extra parameters"),
# without those that let a client change the template (chat_template), its own scheduling
# (priority, request_id) or the server's caches and transfers.
VLLM_DEFAULT = frozenset({
    "top_k", "min_p", "repetition_penalty", "length_penalty", "min_tokens", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens",
    "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids", "bad_words", "use_beam_search",
    "echo", "add_generation_prompt", "continue_final_message", "add_special_tokens",
    "return_tokens_as_token_ids", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
    "guided_whitespace_pattern", "structured_outputs",
})
# DashScope's OpenAI-compatible mode: sampling extras and the thinking budget (web search is billed
# separately, so `enable_search` is left for the operator to allow).
DASHSCOPE_DEFAULT = frozenset({"top_k", "repetition_penalty", "thinking_budget", "vl_high_resolution_images"})
DEFAULTS: dict[str, frozenset[str]] = {"hosted_vllm": VLLM_DEFAULT, "dashscope": DASHSCOPE_DEFAULT,
                                       "openai": frozenset()}

# OpenAI chat fields the request model does not declare: accepted, forwarded as LiteLLM maps them.
OPENAI_FIELDS = frozenset({
    "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "metadata",
    "store", "parallel_tool_calls", "service_tier", "modalities", "audio", "prediction", "web_search_options",
    "functions", "function_call", "verbosity", "safety_identifier", "prompt_cache_key",
})

# The legacy completions API's OpenAI fields that its request model does not declare.
COMPLETION_FIELDS = frozenset({"suffix", "best_of"})

_INT, _NUM, _BOOL, _STR, _LIST, _OBJ = "an integer", "a number", "a boolean", "a string", "an array", "an object"
_TYPES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("top_k", "min_tokens", "truncate_prompt_tokens", "prompt_logprobs", "thinking_budget",
                     "top_logprobs"), (_INT,)),
    **dict.fromkeys(("min_p", "repetition_penalty", "length_penalty", "frequency_penalty", "presence_penalty"),
                    (_NUM,)),
    **dict.fromkeys(("include_stop_str_in_output", "ignore_eos", "skip_special_tokens",
                     "spaces_between_special_tokens", "use_beam_search", "echo", "add_generation_prompt",
                     "continue_final_message", "add_special_tokens", "return_tokens_as_token_ids",
                     "vl_high_resolution_images", "enable_search", "logprobs", "parallel_tool_calls", "store"),
                    (_BOOL,)),
    **dict.fromkeys(("stop_token_ids", "allowed_token_ids", "bad_words", "guided_choice", "modalities",
                     "functions"), (_LIST,)),
    **dict.fromkeys(("guided_regex", "guided_grammar", "guided_whitespace_pattern", "user", "service_tier",
                     "verbosity", "safety_identifier", "prompt_cache_key"), (_STR,)),
    **dict.fromkeys(("structured_outputs", "logit_bias", "metadata", "search_options", "prediction", "audio",
                     "web_search_options"), (_OBJ,)),
    "guided_json": (_OBJ, _STR),
    "function_call": (_OBJ, _STR),
}


def allowed_for(cfg: BackendConfig) -> frozenset[str]:
    """The backend's pass-through allow-list: configured, else its provider's default."""
    if cfg.passthrough is not None:
        return frozenset(cfg.passthrough)
    return DEFAULTS.get(cfg.provider, frozenset())


def _is(value: Any, kind: str) -> bool:
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _NUM:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _LIST:
        return isinstance(value, list)
    return isinstance(value, dict)


def check_extras(data: dict[str, Any], declared: frozenset[str], accepted: frozenset[str]) -> None:
    """Reject fields no backend takes, and values of the wrong JSON type (null means absent)."""
    for name, value in data.items():
        if name in declared:
            continue
        if name not in OPENAI_FIELDS and name not in accepted:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name,
                                 code="unknown_parameter")
        kinds = _TYPES.get(name)
        if value is not None and kinds and not any(_is(value, k) for k in kinds):
            raise InvalidRequest(f"Invalid type for '{name}': expected {' or '.join(kinds)}.", param=name,
                                 code="invalid_type")
