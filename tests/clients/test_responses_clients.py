"""Frameworks that speak the Responses API, through qroute on the simulators: langchain-openai
(`use_responses_api=True`) and pydantic-ai (`OpenAIResponsesModel`). Installed by the `clients`
extra (`make test-clients`); skipped when missing, except under CI, where missing is a failure."""

from __future__ import annotations

import asyncio
import importlib
import os
from types import ModuleType

import pytest

from tests.conftest import CLIENT_KEY


def need(module: str) -> ModuleType:
    if os.environ.get("CI"):
        return importlib.import_module(module)  # CI installs the extra: a missing library fails
    return pytest.importorskip(module)


def upstream_messages(sim) -> list[dict]:
    return sim[0].received[-1]["body"]["messages"]


# --- langchain-openai -----------------------------------------------------------------------
def chat_model(gateway, **kwargs):
    langchain_openai = need("langchain_openai")
    return langchain_openai.ChatOpenAI(base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY, model="local",
                                       use_responses_api=True, max_retries=0, timeout=10, **kwargs)


def test_langchain_invoke(gateway, local_sim):
    message = chat_model(gateway).invoke("hi")
    assert message.text.startswith("The answer")
    assert message.usage_metadata["output_tokens"] == 48 and message.usage_metadata["input_tokens"] > 0
    assert message.response_metadata["id"].startswith("resp_")
    assert upstream_messages(local_sim) == [{"role": "user", "content": "hi"}]


def test_langchain_stream(gateway):
    chunks = list(chat_model(gateway).stream("hi"))
    text = "".join(chunk.text for chunk in chunks)
    assert text.startswith("The answer") and len(chunks) > 10
    assert sum((chunk for chunk in chunks[1:]), chunks[0]).usage_metadata["output_tokens"] == 48


def test_langchain_reasoning_turns_thinking_on(gateway, local_sim):
    message = chat_model(gateway, reasoning={"effort": "low", "summary": "auto"}).invoke("hi")
    assert local_sim[0].received[-1]["body"]["chat_template_kwargs"] == {"enable_thinking": True}
    assert message.text.startswith("The answer")
    reasoning = [block for block in message.content if isinstance(block, dict) and block.get("type") == "reasoning"]
    assert reasoning and reasoning[0]["summary"][0]["text"].startswith("Let me think")


def test_langchain_tool_round_trip(gateway, local_sim):
    messages_mod = need("langchain_core.messages")
    tools_mod = need("langchain_core.tools")

    @tools_mod.tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"22C in {city}"

    llm = chat_model(gateway).bind_tools([get_weather])
    history: list = [messages_mod.HumanMessage("Weather in Hangzhou?")]
    ai = llm.invoke(history)
    assert [call["name"] for call in ai.tool_calls] == ["get_weather"]
    call = ai.tool_calls[0]
    assert call["args"]["city"] == "Hangzhou"
    history += [ai, messages_mod.ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = llm.invoke(history)
    assert final.text.startswith("The answer") and not final.tool_calls
    sent = upstream_messages(local_sim)
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == call["id"] and sent[2]["content"] == "22C in Hangzhou"


# --- pydantic-ai ----------------------------------------------------------------------------
def responses_agent(gateway, **kwargs):
    pydantic_ai = need("pydantic_ai")
    models = need("pydantic_ai.models.openai")
    providers = need("pydantic_ai.providers.openai")
    provider = providers.OpenAIProvider(base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY)
    return pydantic_ai.Agent(models.OpenAIResponsesModel("local", provider=provider), **kwargs)


def test_pydantic_ai_agent_runs(gateway, local_sim):
    result = responses_agent(gateway, instructions="Be brief.").run_sync("hi")
    assert result.output.startswith("The answer")
    assert result.usage.output_tokens == 48
    sent = upstream_messages(local_sim)
    assert sent[0] == {"role": "system", "content": "Be brief."} and sent[-1]["content"] == "hi"


def test_pydantic_ai_agent_with_a_tool(gateway, local_sim):
    agent = responses_agent(gateway)
    calls: list[str] = []

    @agent.tool_plain
    def get_weather(city: str, unit: str = "c") -> str:
        """The weather in a city (the simulator's call also names the unit)."""
        calls.append(city)
        return f"22C in {city}"

    result = agent.run_sync("Weather in Hangzhou?")
    assert calls == ["Hangzhou"] and result.output.startswith("The answer")
    sent = upstream_messages(local_sim)
    assert [m["role"] for m in sent][-3:] == ["user", "assistant", "tool"]
    assert "22C in Hangzhou" in sent[-1]["content"]


def test_pydantic_ai_agent_streams(gateway):
    async def run() -> str:
        async with responses_agent(gateway).run_stream("hi") as stream:
            return await stream.get_output()

    assert asyncio.run(run()).startswith("The answer")
