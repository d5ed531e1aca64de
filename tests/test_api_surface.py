"""The chat API's wider surface: several choices (n), every reasoning_effort the SDK sends, images
only to vision-capable routes, and a simulator that ends an agent's tool loop."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.scrape import parse
from tests.conftest import user

IMAGE = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["local", "cloud"])
def test_n_choices_pass_through_and_are_priced(gateway, local_sim, cloud_sim, model, stream):
    sim = local_sim[0] if model == "local" else cloud_sim[0]
    if stream:
        chunks = list(gateway.client.chat.completions.create(model=model, messages=user(), n=3, stream=True,
                                                             stream_options={"include_usage": True}))
        texts: dict[int, str] = {}
        for chunk in chunks:
            for choice in chunk.choices:
                texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        assert sorted(texts) == [0, 1, 2] and all(t.startswith("The answer") for t in texts.values())
        usage = chunks[-1].usage
    else:
        out = gateway.client.chat.completions.create(model=model, messages=user(), n=3)
        assert [c.index for c in out.choices] == [0, 1, 2]
        usage = out.usage
    assert sim.received[-1]["body"]["n"] == 3
    assert usage.completion_tokens == 3 * 48  # every choice counted, so every choice is priced
    if model == "cloud":
        assert usage.model_extra["qroute_cost_cny"] == pytest.approx((usage.prompt_tokens * 4 + 144 * 8) / 1e6)


def test_n_is_refused_only_where_a_backend_is_configured_without_it(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(backends={"dashscope": {"provider": "dashscope", "model": "qwen3-235b-a22b",
                                              "api_base": f"{cloud_sim[1].base}/v1", "capabilities": {"n": False}}})
    r = gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": user(), "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    assert r.json()["error"]["code"] == "unsupported_by_route" and "dashscope" in r.json()["error"]["message"]
    assert gw.http.post("/v1/chat/completions", json={"model": "cloud", "messages": user(), "n": 1}).status_code == 200
    assert gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user(), "n": 2}).status_code == 200


def test_dashscope_thinking_assembly_keeps_every_choice(gateway, cloud_sim):
    out = gateway.client.chat.completions.create(model="cloud", messages=user(), n=2, reasoning_effort="high")
    assert cloud_sim[0].received[-1]["body"]["stream"] is True  # assembled from a stream
    assert len(out.choices) == 2 and all(c.message.reasoning_content for c in out.choices)


@pytest.mark.parametrize(("effort", "thinking"), [("none", False), ("minimal", False), ("low", True),
                                                  ("medium", True), ("high", True), ("xhigh", True)])
def test_every_reasoning_effort_the_sdk_sends(gateway, local_sim, effort, thinking):
    gateway.client.chat.completions.create(model="local", messages=user(), reasoning_effort=effort)
    assert local_sim[0].received[-1]["body"]["chat_template_kwargs"]["enable_thinking"] is thinking


def test_images_never_reach_a_text_only_model(gateway, local_sim, cloud_sim):
    r = gateway.http.post("/v1/chat/completions", json={"model": "local", "messages": IMAGE})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "unsupported_by_route" and err["param"] == "messages" and "images" in err["message"]
    r = gateway.http.post("/v1/chat/completions", json={"model": "auto", "messages": IMAGE})
    assert r.status_code == 400  # no backend here is vision-capable
    assert local_sim[0].stats["requests"] == 0 and cloud_sim[0].stats["requests"] == 0


def test_auto_sends_images_to_the_vision_capable_route(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(backends={"dashscope": {"provider": "dashscope", "model": "qwen-vl-max",
                                              "api_base": f"{cloud_sim[1].base}/v1",
                                              "capabilities": {"vision": True}}})
    raw = gw.client.chat.completions.with_raw_response.create(model="auto", messages=IMAGE)
    assert raw.headers["x-qroute-route"] == "cloud" and raw.headers["x-qroute-reason"] == "auto:vision"
    assert cloud_sim[0].received[-1]["body"]["messages"][0]["content"][1]["type"] == "image_url"
    # A vision request whose vision route fails does not fall back to the text-only local model.
    cloud_sim[0].behaviour.update({"fail_next": 1})
    r = gw.http.post("/v1/chat/completions", json={"model": "auto", "messages": IMAGE})
    assert r.status_code == 502 and r.headers["x-qroute-attempts"] == "cloud:500"
    assert local_sim[0].stats["requests"] == 0


def test_after_a_tool_result_the_simulator_answers_in_text(gateway):
    first = gateway.client.chat.completions.create(model="local", messages=user("weather?"), tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    messages = [*user("weather?"), first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 21})}]
    second = gateway.client.chat.completions.create(model="local", messages=messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_the_simulator_answers_json_when_the_prompt_asks_for_it(gateway):
    out = gateway.client.chat.completions.create(model="local", messages=user("Reply in JSON with an answer key."))
    assert "answer" in json.loads(out.choices[0].message.content)


def test_legacy_completions_go_to_vllm_by_the_prompts_score(gateway, local_sim):
    raw = gateway.client.completions.with_raw_response.create(model="auto", prompt="Say hello.", max_tokens=8)
    out = raw.parse()
    assert out.choices[0].text.startswith("The answer") and out.usage.completion_tokens == 8
    assert raw.headers["x-qroute-route"] == "local" and float(raw.headers["x-qroute-score"]) >= 0
    sent = local_sim[0].received[-1]
    assert sent["path"] == "/v1/completions" and sent["body"]["model"] == "Qwen/Qwen3-8B"
    assert sent["body"]["prompt"] == "Say hello." and sent["body"]["max_tokens"] == 8


def test_legacy_completions_stream_with_usage(gateway):
    chunks = list(gateway.client.completions.create(model="local", prompt="Hi", stream=True,
                                                    stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.startswith("The answer") and chunks[-1].usage.completion_tokens == 48
    plain = list(gateway.client.completions.create(model="local", prompt="Hi", stream=True))
    assert all(c.usage is None for c in plain)


def test_auto_moves_a_cloud_scored_prompt_to_a_route_that_serves_completions(gateway):
    hard = "请分析并对比两种方案的成本与风险，分别计算三年的净现值并给出建议。" * 20
    raw = gateway.client.completions.with_raw_response.create(model="auto", prompt=hard, max_tokens=4)
    assert raw.headers["x-qroute-route"] == "local" and raw.headers["x-qroute-reason"] == "auto:completions"


def test_completions_pinned_to_a_route_without_them_is_a_clear_400(gateway, cloud_sim):
    r = gateway.http.post("/v1/completions", json={"model": "cloud", "prompt": "hi"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "unsupported_by_route" and "route cloud (backend dashscope)" in err["message"]
    assert cloud_sim[0].stats["requests"] == 0
    r = gateway.http.post("/v1/completions", json={"model": "local"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_completions_are_counted_as_text_completion(gateway):
    def count() -> float:
        return sum(s.value for s in parse(httpx.get(f"{gateway.base}/metrics").text)
                   if s.name == "gen_ai_client_operation_duration_seconds_count"
                   and s.labels["gen_ai_operation_name"] == "text_completion")

    before = count()
    gateway.client.completions.create(model="local", prompt="Hi")
    assert count() == before + 1
