"""POST /v1/responses through the real openai SDK, translated onto the chat pipeline: answers that
validate as the SDK's `Response`, the event stream and its helpers, tools, thinking, chaining by
previous_response_id, the store, formats, usage, metrics, errors, broken and abandoned streams."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.context import RequestState
from gateway.responses.events import response_events
from gateway.responses.protocol import parse_request
from gateway.responses.store import MemoryResponseStore
from gateway.responses.translate import chat_messages, to_chat
from gateway.scrape import parse
from tests.conftest import CLIENT_KEY
from tests.test_rag_gateway import kb_index, rag_gateway  # noqa: F401 (fixtures)

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "weather in a city", "parameters": WEATHER}]
_events = TypeAdapter(ResponseStreamEvent)


def upstream_body(sim) -> dict:
    return sim[0].received[-1]["body"]


def sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """(event line, data) pairs of a raw Responses stream."""
    out, name = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
    return out


def requests_total(gw, **labels: str) -> float:
    samples = parse(httpx.get(f"{gw.base}/metrics", timeout=10).text)
    return sum(s.value for s in samples if s.name == "qroute_requests_total"
               and all(s.labels.get(k) == v for k, v in labels.items()))


# --- answers --------------------------------------------------------------------------------
def test_non_streaming_response_validates_and_carries_headers(gateway, local_sim):
    raw = gateway.client.responses.with_raw_response.create(model="local", input="hi")
    body = raw.http_response.json()
    response = Response.model_validate(body)
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.error is None and response.incomplete_details is None
    assert response.output_text.startswith("The answer")
    assert raw.parse().output_text == response.output_text
    assert response.model == "Qwen/Qwen3-8B"
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    usage = response.usage
    assert usage.output_tokens == 48 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0
    assert body["tool_choice"] == "auto" and body["tools"] == [] and body["parallel_tool_calls"] is True
    assert body["text"] == {"format": {"type": "text"}} and body["metadata"] == {}
    assert raw.headers["x-qroute-route"] == "local" and 0 <= float(raw.headers["x-qroute-score"]) <= 1
    assert raw.headers["x-qroute-model"] == "Qwen/Qwen3-8B" and "x-qroute-cost-cny" in raw.headers
    assert upstream_body(local_sim)["messages"] == [{"role": "user", "content": "hi"}]


def test_parameters_map_onto_the_chat_request(gateway, local_sim):
    response = gateway.client.responses.create(
        model="local", input="hi", temperature=0.3, top_p=0.9, max_output_tokens=64, user="u-1",
        metadata={"team": "search"}, parallel_tool_calls=False, tools=TOOLS, tool_choice="none")
    body = upstream_body(local_sim)
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9 and body["max_tokens"] == 64
    assert body["user"] == "u-1" and body["parallel_tool_calls"] is False and body["tool_choice"] == "none"
    assert body["tools"] == [{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                                              "parameters": WEATHER}}]
    assert "metadata" not in body
    assert response.metadata == {"team": "search"} and response.temperature == 0.3 and response.top_p == 0.9
    assert response.max_output_tokens == 64 and response.tools[0].name == "get_weather"
    assert response.tool_choice == "none" and response.output_text  # tool_choice none: an answer in text


def test_instructions_and_message_items(gateway, local_sim):
    response = gateway.client.responses.create(
        model="local", instructions="Answer briefly.",
        input=[{"role": "developer", "content": "Use metric units."},
               {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                            {"type": "input_text", "text": "in Hangzhou"}]},
               {"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "Which day?", "annotations": []}]},
               {"role": "user", "content": "today"}])
    assert response.instructions == "Answer briefly."
    assert upstream_body(local_sim)["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "system", "content": "Use metric units."},
        {"role": "user", "content": "weather?\nin Hangzhou"},
        {"role": "assistant", "content": "Which day?"},
        {"role": "user", "content": "today"},
    ]


def test_usage_and_cost_from_the_cloud_route(gateway, cloud_sim):
    raw = gateway.client.responses.with_raw_response.create(model="cloud", input="hi")
    response = raw.parse()
    usage = response.usage
    expected = (usage.input_tokens * 4 + usage.output_tokens * 8) / 1e6
    assert usage.model_extra["qroute_cost_cny"] == pytest.approx(expected)
    assert float(raw.headers["x-qroute-cost-cny"]) == pytest.approx(expected)
    assert raw.headers["x-qroute-route"] == "cloud" and response.model == "qwen3-235b-a22b"


def test_rag_grounds_the_response(request, local_sim):
    rag_gw = request.getfixturevalue("rag_gateway")  # test_rag_gateway's: an index built for the test
    raw = rag_gw.client.responses.with_raw_response.create(
        model="local", instructions="Be brief.", input="华东精工的主要客户有哪些？", extra_body={"rag": True})
    messages = upstream_body(local_sim)["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."} and "上汽集团" in messages[1]["content"]
    body = raw.http_response.json()
    assert body["qroute"]["sources"][0]["doc_id"] == "huadong.md"
    assert json.loads(raw.headers["x-qroute-sources"])[0]["doc_id"] == "huadong.md"
    Response.model_validate(body)


# --- thinking -------------------------------------------------------------------------------
@pytest.mark.parametrize(("effort", "thinking"), [("high", True), ("low", True), ("minimal", False), ("none", False)])
def test_reasoning_effort_is_the_thinking_switch(gateway, local_sim, effort, thinking):
    response = gateway.client.responses.create(model="local", input="hi", reasoning={"effort": effort})
    assert upstream_body(local_sim)["chat_template_kwargs"] == {"enable_thinking": thinking}
    assert response.reasoning.effort == effort
    kinds = [item.type for item in response.output]
    assert kinds == (["reasoning", "message"] if thinking else ["message"])
    if thinking:
        assert response.output[0].summary[0].text.startswith("Let me think")
        assert response.usage.output_tokens_details.reasoning_tokens == 24
    Response.model_validate(response.model_dump(mode="json"))


def test_thinking_route_streams_a_reasoning_item_first(gateway, local_sim):
    events = list(gateway.client.responses.create(model="local-think", input="hi", stream=True))
    kinds = [e.type for e in events]
    first_text = kinds.index("response.output_text.delta")
    assert kinds.index("response.reasoning_summary_text.delta") < first_text
    assert kinds.index("response.reasoning_summary_text.done") < first_text
    final = events[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message"]
    thoughts = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert final.output[0].summary[0].text == thoughts and thoughts.startswith("Let me think")
    assert upstream_body(local_sim)["chat_template_kwargs"] == {"enable_thinking": True}


# --- streaming ------------------------------------------------------------------------------
def test_streaming_event_sequence_and_text(gateway, local_sim):
    events = list(gateway.client.responses.create(model="local", input="hi", stream=True))
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[4:4 + len(deltas)] == ["response.output_text.delta"] * len(deltas) and len(deltas) == 48
    assert kinds[4 + len(deltas):] == ["response.output_text.done", "response.content_part.done",
                                       "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(d.delta for d in deltas)
    final = events[-1].response
    assert final.status == "completed" and final.output_text == text and text.startswith("The answer")
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"
    assert final.usage.output_tokens == 48 and final.usage.input_tokens > 0
    assert upstream_body(local_sim)["stream_options"] == {"include_usage": True}


def test_stream_helper_and_raw_wire(gateway):
    with gateway.client.responses.stream(model="local", input="hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.output_text == text and final.status == "completed"
    with gateway.http.stream("POST", "/v1/responses", json={"model": "local", "input": "hi", "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-qroute-route"] == "local"
        events = sse_events(r)
    for name, data in events:  # every event validates as the SDK's event union, named as its type
        assert name == data["type"]
        _events.validate_python(data)
    Response.model_validate(events[-1][1]["response"])


def test_async_client_streams(gateway):
    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
            async with client.responses.stream(model="local", input="hi") as stream:
                final = await stream.get_final_response()
        return final.output_text

    assert asyncio.run(run()).startswith("The answer")


# --- tools ----------------------------------------------------------------------------------
def test_tool_call_round_trip_with_function_call_output(gateway, local_sim):
    first = gateway.client.responses.create(model="local", input="Weather in Hangzhou?", tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].status == "completed"
    assert calls[0].id.startswith("fc_") and calls[0].call_id.startswith("call_")
    assert json.loads(calls[0].arguments)["city"] == "Hangzhou"
    assert first.output_text == ""
    second = gateway.client.responses.create(
        model="local", tools=TOOLS,
        input=[{"role": "user", "content": "Weather in Hangzhou?"},
               *[item.model_dump(exclude_none=True) for item in first.output],
               {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp_c": 22}'}])
    assert upstream_body(local_sim)["messages"] == [
        {"role": "user", "content": "Weather in Hangzhou?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": calls[0].call_id, "type": "function",
                         "function": {"name": "get_weather", "arguments": calls[0].arguments}}]},
        {"role": "tool", "tool_call_id": calls[0].call_id, "content": '{"temp_c": 22}'},
    ]
    assert second.output_text.startswith("The answer")  # after the tool's result, the model answers


def test_named_tool_choice_is_forwarded(gateway, local_sim):
    tools = [*TOOLS, {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}]
    response = gateway.client.responses.create(model="local", input="time?", tools=tools,
                                               tool_choice={"type": "function", "name": "get_time"})
    assert upstream_body(local_sim)["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert response.output[0].name == "get_time"
    assert response.tool_choice.type == "function" and response.tool_choice.name == "get_time"


def test_streamed_tool_call(gateway):
    with gateway.client.responses.stream(model="local", input="Weather?", tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.output_text.delta" not in kinds
    assert kinds.count("response.function_call_arguments.delta") >= 2
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and done.arguments == call.arguments
    assert json.loads(call.arguments)["city"] == "Hangzhou"


# --- formats and limits ---------------------------------------------------------------------
def test_json_schema_format_becomes_response_format(gateway, cloud_sim):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    response = gateway.client.responses.create(
        model="cloud", input="answer", text={"format": {"type": "json_schema", "name": "reply", "schema": schema,
                                                        "strict": True}})
    assert upstream_body(cloud_sim)["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    assert "answer" in json.loads(response.output_text)
    assert response.text.format.type == "json_schema" and response.text.format.name == "reply"


def test_json_object_format(gateway, local_sim):
    response = gateway.client.responses.create(model="local", input="answer",
                                               text={"format": {"type": "json_object"}})
    assert upstream_body(local_sim)["response_format"] == {"type": "json_object"}
    assert "answer" in json.loads(response.output_text)


def test_max_output_tokens_gives_an_incomplete_response(gateway, local_sim):
    response = gateway.client.responses.create(model="local", input="hi", max_output_tokens=5)
    assert upstream_body(local_sim)["max_tokens"] == 5
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete" and response.usage.output_tokens == 5
    events = list(gateway.client.responses.create(model="local", input="hi", max_output_tokens=5, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


# --- previous_response_id and the store -----------------------------------------------------
def test_previous_response_id_chains_the_conversation(gateway, local_sim):
    first = gateway.client.responses.create(model="local", input="first question", instructions="Be brief.")
    second = gateway.client.responses.create(model="local", input="second question", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    # Instructions are not carried over (as OpenAI does); the turns are.
    assert upstream_body(local_sim)["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "second question"},
    ]
    with gateway.client.responses.stream(model="local", input="third", previous_response_id=second.id,
                                         instructions="Be kind.") as stream:
        third = stream.get_final_response()
    assert [m["content"] for m in upstream_body(local_sim)["messages"]] == [
        "Be kind.", "first question", first.output_text, "second question", second.output_text, "third"]
    gateway.client.responses.create(model="local", input="fourth", previous_response_id=third.id)
    assert [m["content"] for m in upstream_body(local_sim)["messages"]][-3:] == ["third", third.output_text, "fourth"]


def test_chaining_after_a_tool_call_needs_only_the_output(gateway, local_sim):
    first = gateway.client.responses.create(model="local", input="Weather?", tools=TOOLS)
    call = first.output[0]
    second = gateway.client.responses.create(
        model="local", tools=TOOLS, previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22C"}])
    roles = [m["role"] for m in upstream_body(local_sim)["messages"]]
    assert roles == ["user", "assistant", "tool"]
    assert second.output_text.startswith("The answer")


def test_unknown_previous_response_is_404(gateway, local_sim):
    with pytest.raises(openai.NotFoundError) as err:
        gateway.client.responses.create(model="local", input="hi", previous_response_id="resp_nope")
    assert err.value.body["code"] == "previous_response_not_found"
    assert err.value.body["param"] == "previous_response_id"
    assert local_sim[0].stats["requests"] == 0


def test_get_and_delete_a_stored_response(gateway):
    created = gateway.client.responses.create(model="local", input="hi", metadata={"k": "v"})
    fetched = gateway.client.responses.retrieve(created.id)
    assert fetched.id == created.id and fetched.output_text == created.output_text
    assert fetched.metadata == {"k": "v"}
    assert gateway.http.delete(f"/v1/responses/{created.id}").json() == {
        "id": created.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        gateway.client.responses.retrieve(created.id)
    r = gateway.http.delete(f"/v1/responses/{created.id}")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{gateway.base}/v1/responses/{created.id}").status_code == 401


def test_store_false_is_not_kept(gateway):
    response = gateway.client.responses.create(model="local", input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        gateway.client.responses.retrieve(response.id)
    streamed = list(gateway.client.responses.create(model="local", input="hi", store=False, stream=True))
    with pytest.raises(openai.NotFoundError):
        gateway.client.responses.create(model="local", input="again", previous_response_id=streamed[-1].response.id)


def test_a_clients_responses_are_its_own(make_gateway):
    gw = make_gateway(auth={"api_keys": [CLIENT_KEY, "sk-other-client"], "api_keys_env": None})
    mine = gw.client.responses.create(model="local", input="hi")
    other = openai.OpenAI(base_url=f"{gw.base}/v1", api_key="sk-other-client", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="local", input="hi", previous_response_id=mine.id)
    assert gw.client.responses.retrieve(mine.id).id == mine.id
    other.close()


def test_store_size_and_ttl_are_configurable(make_gateway):
    gw = make_gateway(responses={"max_stored": 2, "ttl_s": 60})
    ids = [gw.client.responses.create(model="local", input=f"q{i}").id for i in range(3)]
    with pytest.raises(openai.NotFoundError):
        gw.client.responses.retrieve(ids[0])  # the least recently used one went
    assert gw.client.responses.retrieve(ids[2]).id == ids[2]


def test_memory_store_lru_and_ttl():
    asyncio.run(_memory_store_lru_and_ttl())


async def _memory_store_lru_and_ttl() -> None:
    now = [0.0]
    store = MemoryResponseStore(max_items=2, ttl_s=10, clock=lambda: now[0])
    await store.put("a", {"n": 1})
    await store.put("b", {"n": 2})
    assert await store.get("a") == {"n": 1}  # a is now the most recently used
    await store.put("c", {"n": 3})
    assert await store.get("b") is None and await store.get("a") == {"n": 1} and len(store) == 2
    got = await store.get("c")
    got["n"] = 99  # a copy: the stored record is unchanged
    assert await store.get("c") == {"n": 3}
    now[0] = 10.5
    assert await store.get("a") is None and await store.get("c") is None
    assert await store.delete("a") is False


# --- metrics --------------------------------------------------------------------------------
def test_requests_are_counted_once(gateway):
    before = requests_total(gateway, route="local", outcome="ok")
    gateway.client.responses.create(model="local", input="hi")
    list(gateway.client.responses.create(model="local", input="hi", stream=True))
    deadline = time.monotonic() + 3
    while requests_total(gateway, route="local", outcome="ok") < before + 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert requests_total(gateway, route="local", outcome="ok") == before + 2
    client_errors = requests_total(gateway, outcome="client_error")
    with pytest.raises(openai.BadRequestError):
        gateway.client.responses.create(model="local", input="hi", temperature=5)
    assert requests_total(gateway, outcome="client_error") == client_errors + 1


# --- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "param", "needle"), [
    ({"input": "hi", "tools": [{"type": "web_search_preview"}]}, "tools[0].type", "web_search_preview"),
    ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name", "required"),
    ({"input": "hi", "temperature": 3}, "temperature", "less than or equal"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens", "greater than"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id", "required"),
    ({"input": [{"role": "user", "content": "a"}, {"type": "file_search_call", "id": "x"}]}, "input[1].type",
     "file_search_call"),
    ({"input": [{"role": "robot", "content": "a"}]}, "input[0].role", "'developer'"),
    ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input[0].content[0]", "image_url"),
    ({"input": 5}, "input", "valid"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0]",
     "input_file"),
    ({"input": "hi", "tool_choice": {"type": "file_search"}}, "tool_choice", "file_search"),
    ({"input": "hi", "text": {"format": {"type": "json_schema"}}}, "text.format", "name"),
    ({"input": "hi", "reasoning": {"effort": "extreme"}}, "reasoning.effort", "'xhigh'"),
    ({"input": "hi", "background": True}, "background", "not supported"),
    ({"input": []}, "input", "empty"),
    ({}, "input", "empty"),
])
def test_bad_requests_are_400_naming_the_param(gateway, local_sim, body, param, needle):
    r = gateway.http.post("/v1/responses", json={"model": "local", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and needle in error["message"]
    assert local_sim[0].stats["requests"] == 0


def test_other_errors_in_openai_shape(gateway):
    r = gateway.http.post("/v1/responses", json={"model": "gpt-9", "input": "hi"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = gateway.http.post("/v1/responses", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{gateway.base}/v1/responses", json={"model": "local", "input": "hi"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_every_route_failing_is_an_openai_error(gateway, local_sim, cloud_sim):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 502})
    cloud_sim[0].behaviour.update({"fail_next": 1, "error_status": 502})
    with pytest.raises(openai.APIStatusError) as err:
        gateway.client.responses.create(model="local", input="hi", stream=True)
    assert err.value.status_code == 502 and "attempts" in err.value.body["message"]


def test_mid_stream_cut_ends_with_response_failed(gateway, local_sim):
    local_sim[0].behaviour.update({"cut_after_tokens": 5})
    with gateway.http.stream("POST", "/v1/responses", json={"model": "local", "input": "hi", "stream": True}) as r:
        events = sse_events(r)
    kinds = [data["type"] for _, data in events]
    assert kinds.count("response.output_text.delta") == 5 and kinds[-1] == "response.failed"
    failed = Response.model_validate(events[-1][1]["response"])
    assert failed.status == "failed" and failed.error.code == "server_error" and "broke" in failed.error.message
    assert failed.output[0].status == "incomplete" and len(failed.output_text) > 0
    local_sim[0].behaviour.update({"cut_after_tokens": 3})
    sdk_events = list(gateway.client.responses.create(model="local", input="hi", stream=True))
    assert sdk_events[-1].type == "response.failed"
    with pytest.raises(RuntimeError):  # the SDK's helper: no response.completed to return
        with gateway.client.responses.stream(model="local", input="hi") as stream:
            stream.get_final_response()


def _upstream_outcome(sim, request_id: str, wait_s: float) -> str:
    deadline = time.monotonic() + wait_s
    while True:
        records = [r for r in list(sim.received) if r["x-request-id"] == request_id]
        if (records and records[-1]["outcome"] != "started") or time.monotonic() > deadline:
            return records[-1]["outcome"] if records else "missing"
        time.sleep(0.02)


def test_client_disconnect_cancels_upstream_and_is_counted(gateway, local_sim):
    local_sim[0].behaviour.update({"tokens_per_s": 50.0, "output_tokens": 500})  # a 10 s answer
    cancelled = requests_total(gateway, outcome="cancelled")
    with gateway.http.stream("POST", "/v1/responses", headers={"x-request-id": "resp-leave-early"},
                             json={"model": "local", "input": "hi", "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 12:
                break
    assert _upstream_outcome(local_sim[0], "resp-leave-early", wait_s=3) == "disconnected"
    deadline = time.monotonic() + 3
    while requests_total(gateway, outcome="cancelled") < cancelled + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert requests_total(gateway, outcome="cancelled") == cancelled + 1


# --- translation units ----------------------------------------------------------------------
def test_images_become_chat_image_parts():
    parsed = parse_request({"model": "local", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]}]})
    assert chat_messages(None, parsed.items) == [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}]}]


def test_reasoning_items_are_not_sent_upstream():
    parsed = parse_request({"model": "local", "input": [
        {"role": "user", "content": "q"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "r1"}]},
        {"type": "function_call_output", "call_id": "c2", "output": "r2"}]})
    messages = chat_messages("sys", parsed.items)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assert messages[2]["content"] == "a" and [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "r1"}


def _translate(frames: list[bytes]) -> list[dict]:
    """Run the stream translation on hand-made chat frames; the events' data, in order."""
    async def chat_frames():
        for frame in frames:
            yield frame

    async def run() -> list[bytes]:
        draft = to_chat(parse_request({"model": "local", "input": "hi", "stream": True}), None).draft
        return [out async for out in response_events(chat_frames(), draft, RequestState("t"), None)]

    return [json.loads(frame.split(b"\ndata: ", 1)[1]) for frame in asyncio.run(run())]


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"


def test_parallel_tool_calls_stream_as_separate_items():
    def call(index: int, name: str, args: str) -> bytes:
        return _chunk({"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                                       "function": {"name": name, "arguments": args}}]})

    events = _translate([_chunk({"role": "assistant", "content": "Checking."}), call(0, "a", '{"x":'),
                         _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
                         call(1, "b", "{}"), _chunk({}, "tool_calls"), b"data: [DONE]\n\n"])
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert [(i.call_id, i.name, i.arguments) for i in final.output[1:]] == [("call_0", "a", '{"x":1}'),
                                                                             ("call_1", "b", "{}")]
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert added == done == [0, 1, 2]


def test_unreadable_or_unfinished_chat_streams_fail_cleanly():
    for frames in ([_chunk({"content": "a"}), b"data: {not json\n\n"], [_chunk({"content": "a"})]):
        events = _translate(frames)
        assert events[-1]["type"] == "response.failed"
        assert Response.model_validate(events[-1]["response"]).error.code == "server_error"
