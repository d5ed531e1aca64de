"""The `local` route against a real vLLM (a tiny random-weight Qwen3 on the CPU).

Skipped unless QROUTE_VLLM_GATEWAY points at a gateway whose local backend is that vLLM;
`make test-vllm` (tests/vllm/run.sh) builds the model, starts vLLM and the gateway, runs this.
"""

from __future__ import annotations

import os

import openai
import pytest

GATEWAY = os.environ.get("QROUTE_VLLM_GATEWAY")
pytestmark = pytest.mark.skipif(not GATEWAY, reason="needs a real vLLM: run `make test-vllm`")


@pytest.fixture(scope="module")
def client() -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key="sk-vllm-test", max_retries=0, timeout=120)


def test_thinking_off_gives_content_only(client):
    raw = client.chat.completions.with_raw_response.create(
        model="local", messages=[{"role": "user", "content": "hello"}], max_tokens=12, temperature=0)
    out = raw.parse()
    assert raw.headers["x-qroute-route"] == "local" and raw.headers["x-qroute-attempts"] == "local:ok"
    message = out.choices[0].message
    assert message.content
    assert getattr(message, "reasoning_content", None) in (None, "")
    assert out.usage.completion_tokens > 0


def test_thinking_on_gives_reasoning_content(client):
    out = client.chat.completions.create(
        model="local-think", messages=[{"role": "user", "content": "hello"}], max_tokens=12, temperature=0)
    message = out.choices[0].message
    assert message.reasoning_content  # vLLM sent it as `reasoning`; the gateway renamed it
    assert getattr(message, "reasoning", None) is None


def test_streaming_matches_non_streaming(client):
    """Greedy decoding: the streamed text must equal the non-streamed answer, in the same field.
    ("hello" is used because for some prompts the random model emits partial UTF-8 bytes that
    vLLM's streaming detokenizer holds back.)"""
    for model, field in (("local", "content"), ("local-think", "reasoning_content")):
        args = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10,
                "temperature": 0}
        whole = getattr(client.chat.completions.create(**args).choices[0].message, field)
        chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
        text = "".join(getattr(c.choices[0].delta, field, None) or "" for c in chunks if c.choices)
        assert text and text == whole, f"{model}: streamed {text!r}, whole {whole!r}"
        assert chunks[-1].usage.completion_tokens == 10


def test_reasoning_effort_turns_thinking_on_for_local(client):
    out = client.chat.completions.create(
        model="local", messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0,
        reasoning_effort="high")
    assert out.choices[0].message.reasoning_content
