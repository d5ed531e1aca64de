"""`transport: litellm` sends through litellm.acompletion; same translation, same answers."""

from __future__ import annotations

import pytest

from tests.conftest import user


@pytest.fixture
def litellm_gateway(make_gateway, local_sim, cloud_sim):
    timeouts = {"connect_s": 0.5, "first_token_s": 2, "idle_s": 2, "total_s": 10}
    return make_gateway(backends={
        "vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "transport": "litellm",
                       "api_base": f"{local_sim[1].base}/v1", "timeouts": timeouts},
        "dashscope": {"provider": "dashscope", "model": "qwen3-235b-a22b", "transport": "litellm",
                      "api_base": f"{cloud_sim[1].base}/v1", "timeouts": timeouts},
    })


def test_litellm_transport_non_streaming_thinking(litellm_gateway, local_sim):
    out = litellm_gateway.client.chat.completions.create(model="local-think", messages=user(), temperature=0.1)
    body = local_sim[0].received[-1]["body"]
    assert body["chat_template_kwargs"] == {"enable_thinking": True} and body["temperature"] == 0.1
    assert out.choices[0].message.content.startswith("The answer")
    assert out.choices[0].message.reasoning_content.startswith("Let me think")


def test_litellm_transport_streaming_dashscope(litellm_gateway, cloud_sim):
    stream = litellm_gateway.client.chat.completions.create(
        model="cloud", messages=user(), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert cloud_sim[0].received[-1]["body"]["enable_thinking"] is False
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).startswith("The answer")
    assert any(c.usage and c.usage.completion_tokens == 48 for c in chunks)


def test_litellm_transport_falls_back(litellm_gateway, local_sim):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 503})
    raw = litellm_gateway.client.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.headers["x-qroute-attempts"] == "local:503,cloud:ok"  # the upstream's own status
