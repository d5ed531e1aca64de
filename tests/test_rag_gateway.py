"""Retrieval in the gateway: asked for per request, by header or per key; the same context for
every route; sources and timing on the answer."""

from __future__ import annotations

import json
import subprocess
import sys

import openai
import pytest

from tests.conftest import CLIENT_KEY, user


@pytest.fixture(scope="module")
def kb_index(tmp_path_factory):
    src = tmp_path_factory.mktemp("kbsrc")
    (src / "huadong.md").write_text("# 华东精工\n华东精工成立于2003年，总部位于苏州，主要生产精密数控机床，"
                                    "主要客户包括上汽集团和比亚迪。", encoding="utf-8")
    (src / "bank.jsonl").write_text(json.dumps({"id": "南方银行-合作", "text": "南方银行为华东精工提供供应链金融服务。",
                                                "company": "南方银行"}, ensure_ascii=False) + "\n", encoding="utf-8")
    index = tmp_path_factory.mktemp("kbidx") / "idx"
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "index", "build", "--input", str(src), "--index",
                          str(index), "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return index


@pytest.fixture
def rag_gateway(make_gateway, kb_index, monkeypatch):
    monkeypatch.setenv("QROUTE_RAG_KEYS", "sk-rag-by-default")
    return make_gateway(retrieval={"index": str(kb_index), "top_k": 3},
                        auth={"api_keys": [CLIENT_KEY, "sk-rag-by-default"], "api_keys_env": None})


def _system_context(sim) -> str:
    messages = sim.received[-1]["body"]["messages"]
    return "\n".join(m["content"] for m in messages if m["role"] == "system")


def test_rag_in_body_grounds_every_route(rag_gateway, local_sim, cloud_sim):
    for model, sim in (("local", local_sim[0]), ("cloud", cloud_sim[0])):
        raw = rag_gateway.client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "system", "content": "Be brief."}, *user("华东精工的主要客户有哪些？")],
            extra_body={"rag": True})
        body = sim.received[-1]["body"]
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}  # the client's stays first
        assert "上汽集团" in body["messages"][1]["content"] and "[1]" in body["messages"][1]["content"]
        assert "rag" not in body
        completion = json.loads(raw.http_response.text)
        assert completion["qroute"]["sources"][0]["doc_id"] == "huadong.md"
        assert float(raw.headers["x-qroute-retrieval-ms"]) > 0
        assert json.loads(raw.headers["x-qroute-sources"])[0]["doc_id"] == "huadong.md"


def test_header_turns_it_on_for_streams(rag_gateway, local_sim):
    raw = rag_gateway.client.chat.completions.with_raw_response.create(
        model="local", messages=user("南方银行提供什么服务？"), stream=True, extra_headers={"x-qroute-rag": "on"})
    list(raw.parse())
    sources = json.loads(raw.headers["x-qroute-sources"])
    assert sources[0]["doc_id"] == "南方银行-合作"  # Chinese ids survive the ASCII-only header
    assert "供应链金融" in _system_context(local_sim[0])


def test_off_unless_asked(rag_gateway, local_sim):
    raw = rag_gateway.client.chat.completions.with_raw_response.create(model="local", messages=user("华东精工"))
    assert "x-qroute-sources" not in raw.headers and _system_context(local_sim[0]) == ""
    raw = rag_gateway.client.chat.completions.with_raw_response.create(
        model="local", messages=user("华东精工"), extra_body={"rag": False}, extra_headers={"x-qroute-rag": "on"})
    assert "x-qroute-sources" not in raw.headers  # the body wins over the header


def test_per_key_default(rag_gateway, local_sim):
    client = openai.OpenAI(base_url=f"{rag_gateway.base}/v1", api_key="sk-rag-by-default", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="local", messages=user("华东精工的总部在哪？"))
    assert "苏州" in _system_context(local_sim[0]) and "x-qroute-sources" in raw.headers


def test_context_does_not_change_the_routing_score(rag_gateway):
    plain = rag_gateway.client.chat.completions.with_raw_response.create(model="auto", messages=user("华东精工的客户"))
    grounded = rag_gateway.client.chat.completions.with_raw_response.create(
        model="auto", messages=user("华东精工的客户"), extra_body={"rag": True})
    assert plain.headers["x-qroute-score"] == grounded.headers["x-qroute-score"]


def test_bad_header_and_missing_index_are_400(rag_gateway, gateway):
    r = rag_gateway.http.post("/v1/chat/completions", json={"model": "local", "messages": user()},
                              headers={"x-qroute-rag": "maybe"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "x-qroute-rag"
    r = gateway.http.post("/v1/chat/completions", json={"model": "local", "messages": user(), "rag": True})
    assert r.status_code == 400 and r.json()["error"]["code"] == "rag_not_configured"
