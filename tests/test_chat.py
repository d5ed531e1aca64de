"""The OpenAI-compatible chat endpoint through the real openai SDK."""

from __future__ import annotations

import json

import pytest

from tests.conftest import user


def test_non_streaming_answer_and_headers(gateway, local_sim):
    raw = gateway.client.chat.completions.with_raw_response.create(model="local", messages=user("hi"))
    completion = raw.parse()
    assert completion.choices[0].message.content.startswith("The answer")
    assert completion.model == "Qwen/Qwen3-8B"
    assert completion.usage.completion_tokens == 48
    assert raw.headers["x-qroute-route"] == "local"
    assert 0.0 <= float(raw.headers["x-qroute-score"]) <= 1.0
    assert float(raw.headers["x-qroute-overhead-ms"]) >= 0.0
    assert len(raw.headers["x-request-id"]) >= 16
    assert local_sim[0].stats["completed"] == 1


def test_client_request_id_is_kept_and_forwarded(gateway, local_sim):
    raw = gateway.client.chat.completions.with_raw_response.create(
        model="local", messages=user(), extra_headers={"x-request-id": "req-abc-123"})
    assert raw.headers["x-request-id"] == "req-abc-123"
    assert local_sim[0].received[-1]["x-request-id"] == "req-abc-123"
    raw = gateway.client.chat.completions.with_raw_response.create(
        model="local", messages=user(), extra_headers={"x-request-id": "bad id <script>"})
    assert raw.headers["x-request-id"] != "bad id <script>"  # an unsafe one is replaced...
    assert local_sim[0].received[-1]["x-request-id"] == raw.headers["x-request-id"]  # ...and the new one sent on


def test_streaming_with_usage(gateway):
    stream = gateway.client.chat.completions.create(
        model="local", messages=user(), stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The answer")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 48
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_streaming_without_usage_hides_the_usage_chunk(gateway, local_sim):
    chunks = list(gateway.client.chat.completions.create(model="local", messages=user(), stream=True))
    assert all(c.usage is None for c in chunks)
    # ... although the gateway asked the upstream for it (for cost accounting).
    assert local_sim[0].received[-1]["body"]["stream_options"] == {"include_usage": True}


def test_parameters_are_forwarded(gateway, local_sim):
    gateway.client.chat.completions.create(
        model="local", messages=user(), temperature=0.3, max_tokens=7, stop=["zzz"], seed=42,
        response_format={"type": "json_object"}, extra_body={"top_k": 20})
    body = local_sim[0].received[-1]["body"]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 7 and body["seed"] == 42
    assert body["stop"] == ["zzz"] and body["response_format"] == {"type": "json_object"}
    assert body["top_k"] == 20
    assert body["model"] == "Qwen/Qwen3-8B"


def test_stop_and_max_tokens_take_effect(gateway):
    out = gateway.client.chat.completions.create(model="local", messages=user(), max_tokens=5)
    assert out.usage.completion_tokens == 5 and out.choices[0].finish_reason == "length"
    out = gateway.client.chat.completions.create(model="local", messages=user(), stop=["grounded"])
    assert "grounded" not in out.choices[0].message.content


def test_response_format_json(gateway):
    out = gateway.client.chat.completions.create(
        model="cloud", messages=user(), response_format={"type": "json_object"})
    assert "answer" in json.loads(out.choices[0].message.content)


WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"type": "function",
          "function": {"name": "get_weather", "description": "weather in a city", "parameters": WEATHER_PARAMS}}]


@pytest.mark.parametrize("model", ["local", "cloud"])
def test_tool_calls_non_streaming(gateway, model):
    out = gateway.client.chat.completions.create(model=model, messages=user("weather?"), tools=TOOLS,
                                                 tool_choice="auto")
    call = out.choices[0].message.tool_calls[0]
    assert out.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Hangzhou"


@pytest.mark.parametrize("model", ["local", "cloud"])
def test_tool_call_deltas_stream_intact(gateway, model, local_sim, cloud_sim):
    stream = gateway.client.chat.completions.create(
        model=model, messages=user("weather?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}, stream=True)
    name, args, ids = "", "", set()
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            assert call.index == 0
            ids.add(call.id) if call.id else None
            name += call.function.name or ""
            args += call.function.arguments or ""
    assert name == "get_weather" and len(ids) == 1
    assert json.loads(args) == {"city": "Hangzhou", "unit": "c"}
    sim = local_sim[0] if model == "local" else cloud_sim[0]
    assert sim.received[-1]["body"]["tools"] == TOOLS


def test_model_ids_pin_routes(gateway):
    raw = gateway.client.chat.completions.with_raw_response.create(model="qwen3-235b-a22b", messages=user())
    assert raw.headers["x-qroute-route"] == "cloud" and raw.headers["x-qroute-reason"] == "pinned:model"
    raw = gateway.client.chat.completions.with_raw_response.create(model="Qwen/Qwen3-8B", messages=user())
    assert raw.headers["x-qroute-route"] == "local"


def test_auto_routes_by_placeholder_score(gateway):
    short = gateway.client.chat.completions.with_raw_response.create(model="auto", messages=user("hi"))
    long = gateway.client.chat.completions.with_raw_response.create(
        model="auto", messages=user("请分析并对比两种方案的成本与风险。" * 40))
    assert short.headers["x-qroute-route"] == "local"
    assert long.headers["x-qroute-route"] == "cloud"
    assert float(long.headers["x-qroute-score"]) > float(short.headers["x-qroute-score"])


def test_cloud_cost_header(gateway):
    raw = gateway.client.chat.completions.with_raw_response.create(model="cloud", messages=user("hi"))
    usage = raw.parse().usage
    expected = (usage.prompt_tokens * 4 + usage.completion_tokens * 8) / 1e6
    assert float(raw.headers["x-qroute-cost-cny"]) == pytest.approx(expected, rel=1e-6)


def test_upstream_key_is_sent_but_never_echoed(gateway, cloud_sim):
    raw = gateway.http.post("/v1/chat/completions", json={"model": "cloud", "messages": user()})
    assert cloud_sim[0].received[-1]["authorization"] == "present"
    assert "sk-upstream-secret-123" not in raw.text and "sk-upstream-secret-123" not in str(raw.headers)
