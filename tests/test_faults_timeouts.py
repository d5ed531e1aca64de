"""Fault tests, time: hangs before and after the first token (streamed and not), a listener that never
accepts, connection refused, both routes down, and 500/429/503 at a rate. Each asserts what the client
saw, that nothing waited past its timeout, what the breaker and /readyz say, and what the metrics count.
(tests/test_failures.py has the basic streamed cases; these extend them.)"""

from __future__ import annotations

import time

import httpx
import pytest
from aiohttp import web

from simulator.harness import free_port
from tests.conftest import user
from tests.fakes import FakeUpstream, SilentListener, completion, local_backend, send_json
from tests.test_metrics import scrape, value

CHAT = "/v1/chat/completions"
LONG = 30  # total_s in these tests: a request that waited for it has waited too long


def readyz(gw) -> httpx.Response:
    return httpx.get(f"{gw.base}/readyz", timeout=10)


@pytest.mark.parametrize("hang_after_tokens", [0, 4])
def test_a_non_streaming_request_falls_back_when_the_upstream_hangs(make_gateway, local_sim, hang_after_tokens):
    """Before its first token or mid-answer: first_token_s / idle_s (1 s), not total_s (30 s)."""
    gw = make_gateway(backends=local_backend(local_sim[1].base, total_s=LONG))
    local_sim[0].behaviour.update({"hang_after_tokens": hang_after_tokens})
    started = time.perf_counter()
    r = gw.http.post(CHAT, json={"model": "local", "messages": user()}, timeout=LONG + 10)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:504,cloud:ok"
    assert r.json()["model"] == "qwen3-235b-a22b"
    assert 0.9 < elapsed < 10
    assert value(scrape(gw), "qroute_fallbacks_total", from_route="local", to_route="cloud", cause="504") == 1


def test_a_direct_non_streaming_read_that_stops_mid_body_falls_back(make_gateway):
    async def half(request: web.Request, body: dict) -> web.StreamResponse:
        return await send_json(request, completion(), hang_mid_body=True)

    with FakeUpstream(half) as up:
        backends = local_backend(up.base, total_s=LONG)
        backends["vllm-local"]["non_streaming"] = "direct"
        gw = make_gateway(backends=backends)
        started = time.perf_counter()
        r = gw.http.post(CHAT, json={"model": "local", "messages": user()}, timeout=LONG + 10)
        assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:504,cloud:ok"
        assert time.perf_counter() - started < 10  # idle_s on the body, not total_s
        assert up.requests[0]["body"]["stream"] is False


@pytest.mark.parametrize("stream", [True, False])
def test_a_listener_that_never_accepts_is_given_up_on_at_the_first_token_timeout(make_gateway, stream):
    silent = SilentListener()
    try:
        gw = make_gateway(backends=local_backend(silent.base, total_s=LONG))
        started = time.perf_counter()
        r = gw.http.post(CHAT, json={"model": "local", "messages": user(), "stream": stream}, timeout=LONG + 10)
        assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:504,cloud:ok"
        assert time.perf_counter() - started < 10
        info = readyz(gw).json()["upstreams"]["vllm-local"]
        assert info["reachable"] is False and info["consecutive_failures"] == 1
    finally:
        silent.close()


def test_connection_refused_is_charged_and_reported(make_gateway):
    gw = make_gateway(backends=local_backend(f"http://127.0.0.1:{free_port()}"),
                      breaker={"failure_threshold": 2, "reset_after_s": 30})
    for _ in range(2):
        r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
        assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:503,cloud:ok"
    body = readyz(gw).json()
    assert body["ready"] is True  # the cloud serves
    assert body["upstreams"]["vllm-local"]["breaker"] == "open"
    assert body["upstreams"]["vllm-local"]["accepting"] is False
    r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
    assert r.headers["x-qroute-attempts"] == "local:circuit_open,cloud:ok"
    samples = scrape(gw)
    assert value(samples, "qroute_upstream_failures_total", backend="vllm-local", blame="upstream",
                 charged="true") == 2
    assert value(samples, "qroute_backend_breaker_state", backend="vllm-local") == 2


def test_both_routes_down(make_gateway):
    dead = {"connect_s": 0.5, "first_token_s": 1, "idle_s": 1, "total_s": LONG}
    gw = make_gateway(breaker={"failure_threshold": 1, "reset_after_s": 30}, backends={
        "vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B",
                       "api_base": f"http://127.0.0.1:{free_port()}/v1", "timeouts": dead},
        "dashscope": {"provider": "dashscope", "model": "qwen3-235b-a22b",
                      "api_base": f"http://127.0.0.1:{free_port()}/v1", "timeouts": dead}})
    started = time.perf_counter()
    r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert r.headers["x-qroute-attempts"] == "local:503,cloud:503"
    r = gw.http.post(CHAT, json={"model": "local", "messages": user(), "stream": True})
    assert r.status_code == 503 and "every circuit breaker is open" in r.json()["error"]["message"]
    assert 25 <= int(r.headers["retry-after"]) <= 30
    assert time.perf_counter() - started < 10
    ready = readyz(gw)
    assert ready.status_code == 503 and ready.json()["ready"] is False
    assert value(scrape(gw), "qroute_requests_total", outcome="upstream_unavailable") == 2


@pytest.mark.parametrize("status", [500, 429, 503])
def test_errors_at_a_rate_are_absorbed_by_fallback_and_counted(make_gateway, local_sim, status):
    gw = make_gateway()
    local_sim[0].behaviour.update({"error_rate": 0.4, "error_status": status, "retry_after_s": 0})
    for i in range(20):
        r = gw.http.post(CHAT, json={"model": "local", "messages": user(), "stream": i % 2 == 0})
        assert r.status_code == 200
    failed = local_sim[0].stats["errors"]
    assert 0 < failed < 20
    samples = scrape(gw)
    assert value(samples, "qroute_fallbacks_total", from_route="local", to_route="cloud", cause=str(status)) == failed
    blame = "unsure" if status == 500 else "upstream"
    assert value(samples, "qroute_upstream_failures_total", backend="vllm-local", blame=blame,
                 charged="true") == failed  # the cloud answered each: the requests were servable
    assert value(samples, "qroute_requests_total", outcome="ok") == 20
