"""GET /v1/models, /healthz and /readyz."""

from __future__ import annotations

import httpx

from tests.conftest import ADMIN_KEY, free_port


def test_models_list_in_openai_shape(gateway):
    models = gateway.client.models.list()
    ids = [m.id for m in models.data]
    assert ids[:4] == ["auto", "local", "local-think", "cloud"]
    assert "Qwen/Qwen3-8B" in ids and "qwen3-235b-a22b" in ids
    assert all(m.object == "model" and m.owned_by == "qroute" for m in models.data)


def test_healthz_needs_no_key(gateway):
    r = httpx.get(f"{gateway.base}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_reports_each_upstream(make_gateway, local_sim, cloud_sim):
    gateway = make_gateway(auth={"admin_keys": [ADMIN_KEY]})  # its own breakers: no earlier failures counted
    r = httpx.get(f"{gateway.base}/readyz", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    body = r.json()
    assert r.status_code == 200 and body["ready"] is True
    spill = body["upstreams"]["vllm-local"].pop("spill")  # the local backend can spill to the cloud
    assert spill["spilling"] is False and set(spill) == {"spilling", "vllm_waiting", "vllm_running"}
    assert body["upstreams"]["vllm-local"] == {
        "reachable": True, "breaker": "closed", "consecutive_failures": 0, "in_flight": 0,
        "model": "Qwen/Qwen3-8B", "api_base": f"{local_sim[1].base}/v1",
        "accepting": True, "trial_in_flight": False, "pool_full": False,
    }
    assert body["upstreams"]["dashscope"]["api_base"] == f"{cloud_sim[1].base}/v1"
    assert "api_key" not in r.text


def test_readyz_without_the_admin_key_shows_states_only(make_gateway, local_sim):
    gateway = make_gateway(auth={"admin_keys": [ADMIN_KEY]})
    for headers in ({}, {"authorization": "Bearer sk-test-client"}, {"authorization": "Bearer wrong"}):
        r = httpx.get(f"{gateway.base}/readyz", headers=headers)
        assert r.status_code == 200
        for state in r.json()["upstreams"].values():  # states: booleans and counts, never names or URLs
            assert set(state) <= {"reachable", "breaker", "accepting", "consecutive_failures", "in_flight",
                                  "trial_in_flight", "pool_full", "spilling"}, state
            assert state["reachable"] is True and state["breaker"] == "closed" and state["accepting"] is True
        assert set(r.json()["upstreams"]) == {"vllm-local", "dashscope"}
        assert local_sim[1].base not in r.text and "Qwen" not in r.text


def test_readyz_is_503_when_no_upstream_answers(make_gateway):
    dead = [free_port(), free_port()]
    gw = make_gateway(backends={
        "vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"http://127.0.0.1:{dead[0]}/v1"},
        "dashscope": {"provider": "dashscope", "model": "qwen3-235b-a22b",
                      "api_base": f"http://127.0.0.1:{dead[1]}/v1"},
    })
    r = httpx.get(f"{gw.base}/readyz")
    assert r.status_code == 503
    assert {u["reachable"] for u in r.json()["upstreams"].values()} == {False}
    r = gw.http.post("/v1/chat/completions", json={"model": "local", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"


def test_every_listed_model_can_be_retrieved(gateway):
    listed = gateway.client.models.list().data
    assert "Qwen/Qwen3-8B" in [m.id for m in listed]  # ids with a `/`: the SDK sends Qwen%2FQwen3-8B
    for card in listed:
        assert gateway.client.models.retrieve(card.id).model_dump() == card.model_dump()
    r = gateway.http.get("/v1/models/Qwen/Qwen3-8B")  # unencoded, as curl would send it
    assert r.status_code == 200
    assert r.json() == {"id": "Qwen/Qwen3-8B", "object": "model", "created": r.json()["created"], "owned_by": "qroute"}


def test_retrieving_an_unknown_model_is_a_404_in_openai_shape(gateway):
    import openai

    for model in ("gpt-4o", "Qwen/Qwen3-8B/extra", "qwen", "default"):
        try:
            gateway.client.models.retrieve(model)
        except openai.NotFoundError as exc:
            assert exc.code == "model_not_found" and exc.param == "model" and model in exc.body["message"]
        else:
            raise AssertionError(f"{model} was found")
    r = gateway.http.get("/v1/models/nope/x")
    assert r.status_code == 404
    assert r.json() == {"error": {"message": "The model 'nope/x' does not exist.", "type": "invalid_request_error",
                                  "param": "model", "code": "model_not_found"}}


def test_retrieving_a_model_needs_a_client_key(gateway):
    r = httpx.get(f"{gateway.base}/v1/models/local")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
