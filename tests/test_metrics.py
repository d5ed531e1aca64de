"""GET /metrics: every request counted and priced, streamed or not, answered, failed, fallen back,
rejected or cancelled; GenAI names and buckets; bounded labels; keys and the off switch."""

from __future__ import annotations

import random
import string
import time

import httpx
import openai
import pytest

from gateway.metrics import DURATION_BUCKETS, TOKEN_BUCKETS, TTFT_BUCKETS
from gateway.scrape import Sample, parse
from tests.conftest import user

HARDWARE = {"gpu_price_cny": 60000, "amortise_years": 3, "gpus": 1, "power_watts": 400,
            "electricity_cny_per_kwh": 0.7}


def scrape(gw) -> list[Sample]:
    r = httpx.get(f"{gw.base}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture
def metered(make_gateway, local_sim):
    """A gateway whose local backend is priced by hardware share, cloud per token."""
    backends = {"vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B",
                               "api_base": f"{local_sim[1].base}/v1", "hardware": HARDWARE,
                               "timeouts": {"connect_s": 0.5, "first_token_s": 1.0, "idle_s": 1.0, "total_s": 10}}}
    return make_gateway(backends=backends, targets={"daily_spend_cny": 50, "cloud_share": 0.2})


def test_answers_are_counted_and_priced(metered, local_sim):
    local_sim[0].behaviour.update({"ttft_s": 0.05, "tokens_per_s": 500})  # ~0.15 s busy per answer
    raw = metered.client.chat.completions.with_raw_response.create(model="local", messages=user("hi"))
    local_cost = float(raw.headers["x-qroute-cost-cny"])
    assert raw.parse().usage.model_extra["qroute_cost_cny"] == pytest.approx(local_cost, abs=1e-8)
    per_second = (60000 / (3 * 365.25 * 86400) + 0.4 * 0.7 / 3600)
    assert 0.1 * per_second < local_cost < 2.0 * per_second  # about 0.15 s of the whole GPU
    cloud = metered.client.chat.completions.with_raw_response.create(model="cloud", messages=user("hi"))
    usage = cloud.parse().usage
    cloud_cost = (usage.prompt_tokens * 4 + usage.completion_tokens * 8) / 1e6
    assert float(cloud.headers["x-qroute-cost-cny"]) == pytest.approx(cloud_cost)

    m = scrape(metered)
    assert value(m, "qroute_requests_total", route="local", model="Qwen/Qwen3-8B", outcome="ok",
                 reason="pinned:route") == 1
    assert value(m, "qroute_cost_cny_total", route="local") == pytest.approx(local_cost, abs=1e-8)
    assert value(m, "qroute_cost_cny_total", route="cloud") == pytest.approx(cloud_cost)
    # The counterfactual: the local answer's tokens at the cloud route's prices.
    assert value(m, "qroute_cloud_equivalent_cost_cny_total", route="local") == pytest.approx(
        (usage.prompt_tokens * 4 + 48 * 8) / 1e6, rel=0.05)
    assert value(m, "qroute_tokens_total", route="local", type="completion") == 48
    assert value(m, "gen_ai_client_token_usage_count", route="cloud", gen_ai_token_type="output",
                 gen_ai_provider_name="dashscope", gen_ai_request_model="qwen3-235b-a22b") == 1
    assert value(m, "gen_ai_client_operation_duration_seconds_count", route="local", gen_ai_operation_name="chat",
                 gen_ai_provider_name="vllm", error_type="") == 1
    assert value(m, "qroute_backend_hardware_cost_cny_per_second", backend="vllm-local") == pytest.approx(per_second)
    assert value(m, "qroute_target", target="daily_spend_cny") == 50
    assert value(m, "qroute_router_scoring_seconds_count") == 2
    assert value(m, "qroute_gateway_overhead_seconds_count", route="local") == 1


def test_streams_are_priced_from_their_usage_even_when_the_client_did_not_ask(metered):
    chunks = list(metered.client.chat.completions.create(model="cloud", messages=user("hi"), stream=True,
                                                         stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    expected = (usage.prompt_tokens * 4 + usage.completion_tokens * 8) / 1e6
    assert usage.model_extra["qroute_cost_cny"] == pytest.approx(expected, abs=1e-8)
    plain = list(metered.client.chat.completions.create(model="cloud", messages=user("hi"), stream=True))
    assert all(c.usage is None for c in plain)  # kept out of the client's stream...
    m = scrape(metered)
    assert value(m, "qroute_cost_cny_total", route="cloud") == pytest.approx(2 * expected)  # ...but priced
    assert value(m, "gen_ai_server_time_to_first_token_seconds_count", route="cloud") == 2
    assert value(m, "gen_ai_server_time_per_output_token_seconds_count", route="cloud") == 2
    assert value(m, "qroute_requests_total", route="cloud", outcome="ok") == 2


def test_thinking_tokens_are_counted(metered):
    metered.client.chat.completions.create(model="local-think", messages=user("hi"))
    m = scrape(metered)
    assert value(m, "qroute_tokens_total", route="local-think", type="reasoning") == 24
    assert value(m, "qroute_tokens_total", route="local-think", type="completion") == 72  # reasoning included


def test_fallback_and_failures_are_counted(metered, local_sim, cloud_sim):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 503})
    metered.client.chat.completions.create(model="local", messages=user())
    local_sim[0].behaviour.update({"fail_next": 1})
    cloud_sim[0].behaviour.update({"fail_next": 1})
    r = metered.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})
    assert r.status_code == 502
    m = scrape(metered)
    assert value(m, "qroute_fallbacks_total", from_route="local", to_route="cloud", cause="503") == 2
    assert value(m, "qroute_requests_total", route="cloud", model="qwen3-235b-a22b", outcome="ok") == 1
    assert value(m, "qroute_requests_total", route="local", model="none", outcome="upstream_error") == 1


def test_rejected_requests_are_counted_without_inventing_labels(metered):
    assert metered.http.post("/v1/chat/completions", content=b"{bad").status_code == 400
    assert metered.http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": user()}).status_code == 404
    assert httpx.post(f"{metered.base}/v1/chat/completions", json={"model": "auto", "messages": user()}).status_code == 401
    m = scrape(metered)
    assert value(m, "qroute_requests_total", route="none", model="none", outcome="client_error", reason="none") == 2
    assert value(m, "qroute_requests_total", outcome="unauthorized") == 1
    assert not [s for s in m if "gpt-9" in str(s.labels)]


def test_broken_and_cancelled_streams_are_counted_and_priced(metered, local_sim):
    local_sim[0].behaviour.update({"cut_after_tokens": 5})
    with pytest.raises(openai.APIError):
        list(metered.client.chat.completions.create(model="local", messages=user(), stream=True))
    local_sim[0].behaviour.update({"cut_after_tokens": -1, "tokens_per_s": 50.0, "output_tokens": 500})
    with metered.http.stream("POST", "/v1/chat/completions",
                             json={"model": "local", "messages": user(), "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 6:
                break
    deadline = time.monotonic() + 10
    while value(scrape(metered), "qroute_requests_total", outcome="cancelled") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    m = scrape(metered)
    assert value(m, "qroute_requests_total", route="local", outcome="stream_error") == 1
    assert value(m, "qroute_requests_total", route="local", outcome="cancelled") == 1
    assert value(m, "qroute_cost_cny_total", route="local") > 0  # the GPU time they used is still charged
    assert value(m, "qroute_tokens_total", route="local", type="completion") >= 3  # estimated from the chunks
    assert value(m, "qroute_backend_in_flight", backend="vllm-local") == 0


def test_breaker_state_and_thresholds_are_exported(make_gateway, local_sim, monkeypatch):
    monkeypatch.setenv("QROUTE_ADMIN_KEYS", "sk-admin-metrics")
    gw = make_gateway(breaker={"failure_threshold": 1, "reset_after_s": 60})
    local_sim[0].behaviour.update({"fail_next": 1})
    gw.client.chat.completions.create(model="local", messages=user())
    m = scrape(gw)
    assert value(m, "qroute_backend_breaker_state", backend="vllm-local") == 2
    assert value(m, "qroute_backend_breaker_state", backend="dashscope") == 0
    assert value(m, "qroute_router_threshold", threshold="t2") == 0.7
    r = gw.http.put("/admin/router", json={"t2": 0.9}, headers={"authorization": "Bearer sk-admin-metrics"})
    assert r.status_code == 200
    assert value(scrape(gw), "qroute_router_threshold", threshold="t2") == 0.9


def test_router_scores_and_decisions(gateway):
    before = scrape(gateway)
    gateway.client.chat.completions.create(model="auto", messages=user("hi"))
    after = scrape(gateway)
    assert value(after, "qroute_router_decisions_total", route="local") - \
        value(before, "qroute_router_decisions_total", route="local") == 1
    assert value(after, "qroute_router_score_count", mode="auto") - value(before, "qroute_router_score_count",
                                                                          mode="auto") == 1


def test_genai_bucket_boundaries(gateway):
    gateway.client.chat.completions.create(model="local", messages=user(), stream=True).close()
    m = scrape(gateway)

    def bounds(name: str) -> list[float]:
        seen = sorted({float(s.labels["le"]) for s in m if s.name == name and s.labels["le"] != "+Inf"})
        return seen

    assert bounds("gen_ai_client_operation_duration_seconds_bucket") == list(DURATION_BUCKETS)
    assert bounds("gen_ai_client_token_usage_bucket") == [float(b) for b in TOKEN_BUCKETS]
    assert bounds("gen_ai_server_time_to_first_token_seconds_bucket") == list(TTFT_BUCKETS)


def _series(gw) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for s in scrape(gw)}


def test_labels_stay_bounded_under_random_models_and_paths(make_gateway):
    gw = make_gateway()
    rng = random.Random(0)

    def junk(n: int) -> str:
        return "".join(rng.choice(string.ascii_letters + string.digits + "-_./") for _ in range(n))

    for _ in range(20):  # every legitimate label combination this test can reach, once
        gw.client.chat.completions.create(model="local", messages=user())
        gw.http.post("/v1/chat/completions", json={"model": "nope", "messages": user()})
        gw.http.get(f"/v1/{junk(8)}")
    baseline = _series(gw)
    with httpx.Client(base_url=gw.base, headers={"authorization": "Bearer sk-test-client"}, timeout=10) as http:
        for i in range(1000):
            if i % 2:
                http.post("/v1/chat/completions", json={"model": junk(12), "messages": user()})
            else:
                http.get(f"/{junk(16)}?user={junk(6)}", headers={"x-request-id": junk(10)})
    after = _series(gw)
    grown = {name for name, labels in after - baseline if not name.endswith(("_bucket", "_count", "_sum"))}
    assert not grown, grown
    assert len(after) <= len(baseline) + 20  # only counts of existing series moved, no new label values


def test_metrics_can_require_a_key(make_gateway):
    gw = make_gateway(metrics={"require_key": True})
    assert httpx.get(f"{gw.base}/metrics").status_code == 401
    assert gw.http.get("/metrics").status_code == 200  # the client key works, as on /v1


def test_metrics_can_be_turned_off(make_gateway):
    gw = make_gateway(metrics={"enabled": False})
    assert gw.client.chat.completions.create(model="local", messages=user()).choices
    r = httpx.get(f"{gw.base}/metrics")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
