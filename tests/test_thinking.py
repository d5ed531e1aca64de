"""Thinking switch translation per backend, asserted on the body each upstream received, and
reasoning returned as `reasoning_content` whichever field the backend used."""

from __future__ import annotations

import pytest

from tests.conftest import user


def _vllm_body(local_sim):
    return local_sim[0].received[-1]["body"]


def _dashscope_body(cloud_sim):
    return cloud_sim[0].received[-1]["body"]


def test_local_route_turns_thinking_off_for_vllm(gateway, local_sim):
    out = gateway.client.chat.completions.create(model="local", messages=user())
    body = _vllm_body(local_sim)
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "enable_thinking" not in body and "reasoning_effort" not in body
    assert getattr(out.choices[0].message, "reasoning_content", None) is None


def test_local_think_route_returns_reasoning_content(gateway, local_sim):
    out = gateway.client.chat.completions.create(model="local-think", messages=user())
    assert _vllm_body(local_sim)["chat_template_kwargs"] == {"enable_thinking": True}
    message = out.choices[0].message
    assert message.reasoning_content.startswith("Let me think")  # vLLM sent it as `reasoning`
    assert not hasattr(message, "reasoning") or message.reasoning is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"reasoning_effort": "high"}, True),
        ({"reasoning_effort": "none"}, False),
        ({"enable_thinking": True}, True),
        ({"chat_template_kwargs": {"enable_thinking": True}}, True),
        ({"enable_thinking": False, "reasoning_effort": "high"}, False),  # explicit flag wins
    ],
)
def test_client_dialects_reach_vllm_as_chat_template_kwargs(gateway, local_sim, extra, expected):
    gateway.client.chat.completions.create(model="local", messages=user(), extra_body=extra)
    body = _vllm_body(local_sim)
    assert body["chat_template_kwargs"]["enable_thinking"] is expected
    assert "enable_thinking" not in body and "reasoning_effort" not in body


def test_other_chat_template_kwargs_survive(gateway, local_sim):
    gateway.client.chat.completions.create(
        model="local-think", messages=user(), extra_body={"chat_template_kwargs": {"custom": 1}})
    assert _vllm_body(local_sim)["chat_template_kwargs"] == {"custom": 1, "enable_thinking": True}


def test_streaming_reasoning_from_vllm_is_renamed(gateway):
    stream = gateway.client.chat.completions.create(model="local-think", messages=user(), stream=True)
    chunks = [c for c in stream if c.choices]
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks)
    assert reasoning.startswith("Let me think")
    assert all(getattr(c.choices[0].delta, "reasoning", None) is None for c in chunks)


def test_older_vllm_reasoning_content_field_passes_through(gateway, local_sim):
    local_sim[0].behaviour.reasoning_field = "reasoning_content"
    out = gateway.client.chat.completions.create(model="local-think", messages=user())
    assert out.choices[0].message.reasoning_content.startswith("Let me think")


def test_dashscope_gets_top_level_enable_thinking_false(gateway, cloud_sim):
    gateway.client.chat.completions.create(model="cloud", messages=user())
    body = _dashscope_body(cloud_sim)
    assert body["enable_thinking"] is False  # DashScope's Qwen3 would think (and 400) otherwise
    assert "chat_template_kwargs" not in body and "reasoning_effort" not in body


def test_dashscope_streaming_thinking(gateway, cloud_sim):
    stream = gateway.client.chat.completions.create(
        model="cloud", messages=user(), stream=True, extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    chunks = [c for c in stream if c.choices]
    body = _dashscope_body(cloud_sim)
    assert body["enable_thinking"] is True and "chat_template_kwargs" not in body
    assert "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks)


def test_dashscope_non_streaming_thinking_is_streamed_upstream_and_assembled(gateway, cloud_sim):
    out = gateway.client.chat.completions.create(model="cloud", messages=user(), reasoning_effort="high")
    body = _dashscope_body(cloud_sim)
    assert body["stream"] is True and body["enable_thinking"] is True
    assert cloud_sim[0].stats["errors"] == 0
    message = out.choices[0].message
    assert message.reasoning_content.startswith("Let me think")
    assert message.content.startswith("The answer")
    assert out.usage.completion_tokens_details.reasoning_tokens == 24
    assert out.object == "chat.completion"


def test_simulated_dashscope_rejects_non_streaming_thinking(cloud_sim):
    """The simulator is faithful: this is why the gateway must never send that combination."""
    import httpx

    r = httpx.post(f"{cloud_sim[1].base}/v1/chat/completions",
                   json={"model": "qwen3-235b-a22b", "messages": user(), "enable_thinking": True})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_parameter_error"
