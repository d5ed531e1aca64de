"""Failures before the first token fall back to the other route; failures after it end the
stream with an error event; a client that leaves cancels the upstream request."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import free_port, user


def _sse_frames(response: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_retryable_status_falls_back_to_cloud(gateway, local_sim, cloud_sim, status):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": status})
    raw = gateway.client.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.parse().model == "qwen3-235b-a22b"
    assert raw.headers["x-qroute-route"] == "cloud"
    assert raw.headers["x-qroute-attempts"] == f"local:{status},cloud:ok"  # the upstream's own status
    assert local_sim[0].stats["errors"] == 1 and cloud_sim[0].stats["completed"] == 1


def test_streaming_falls_back_before_first_token(gateway, local_sim):
    local_sim[0].behaviour.update({"fail_next": 1})
    raw = gateway.client.chat.completions.with_raw_response.create(model="local", messages=user(), stream=True)
    chunks = list(raw.parse())
    assert raw.headers["x-qroute-route"] == "cloud"
    assert chunks[0].model == "qwen3-235b-a22b"


def test_first_token_timeout_falls_back(gateway, local_sim):
    local_sim[0].behaviour.update({"ttft_s": 60.0})  # gateway's first_token_s is 1.0 in tests
    started = time.perf_counter()
    raw = gateway.client.chat.completions.with_raw_response.create(model="local", messages=user(), stream=True)
    list(raw.parse())
    assert raw.headers["x-qroute-route"] == "cloud"
    assert raw.headers["x-qroute-attempts"] == "local:504,cloud:ok"
    assert time.perf_counter() - started < 30  # gave up on local after first_token_s, not its 60 s


def test_non_streaming_timeout_falls_back(make_gateway, local_sim):
    gw = make_gateway(backends={"vllm-local": {
        "provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"{local_sim[1].base}/v1",
        "timeouts": {"connect_s": 0.5, "first_token_s": 1, "idle_s": 1, "total_s": 0.5}}})
    local_sim[0].behaviour.update({"ttft_s": 3.0})
    raw = gw.client.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.headers["x-qroute-attempts"] == "local:504,cloud:ok"


def test_hang_before_first_token_falls_back(gateway, local_sim):
    local_sim[0].behaviour.update({"hang_after_tokens": 0})
    raw = gateway.client.chat.completions.with_raw_response.create(model="local", messages=user(), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert raw.headers["x-qroute-route"] == "cloud"


class PauseRecorder:
    """Stands in for the pipeline's pause between attempts and records what it was asked for."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.mark.parametrize(("delay_ms", "pauses"), [(0, []), (40, [0.04])])
def test_connection_refused_falls_back_at_once(make_gateway, monkeypatch, delay_ms, pauses):
    pause = PauseRecorder()
    monkeypatch.setattr("gateway.pipeline.pause", pause)
    dead = free_port()
    gw = make_gateway(fallback={"delay_ms": delay_ms}, backends={"vllm-local": {
        "provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"http://127.0.0.1:{dead}/v1",
        "timeouts": {"connect_s": 20}}})
    started = time.perf_counter()
    raw = gw.client.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.headers["x-qroute-attempts"] == "local:503,cloud:ok"
    assert time.perf_counter() - started < 10  # a refusal is not waited on until connect_s (20 s)
    assert pause.calls == pauses  # no pause between attempts unless fallback.delay_ms asks for one


def test_non_retryable_upstream_error_is_returned_not_retried(gateway, local_sim, cloud_sim):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 400})
    with pytest.raises(openai.BadRequestError) as info:
        gateway.client.chat.completions.create(model="local", messages=user())
    assert info.value.body["message"].startswith("upstream vllm-local returned 400")
    assert cloud_sim[0].stats["requests"] == 0


def test_all_routes_failing_gives_502_in_openai_shape(gateway, local_sim, cloud_sim):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 503})
    cloud_sim[0].behaviour.update({"fail_next": 1, "error_status": 500})
    r = gateway.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})
    assert r.status_code == 502  # the last failure decides
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "upstream_error" and err["type"] == "upstream_error"  # ours, not the upstream's
    assert "attempts: local:503, cloud:500" in err["message"]
    assert r.headers["x-qroute-route"] == "local" and r.headers["x-qroute-attempts"] == "local:503,cloud:500"


def test_every_route_unavailable_is_503_with_retry_after(gateway, local_sim, cloud_sim):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 503})
    cloud_sim[0].behaviour.update({"fail_next": 1, "error_status": 503})
    r = gateway.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert int(r.headers["retry-after"]) >= 1 and r.headers["x-qroute-attempts"] == "local:503,cloud:503"


def test_every_route_rate_limited_is_429_with_retry_after(gateway, local_sim, cloud_sim):
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 429})
    cloud_sim[0].behaviour.update({"fail_next": 1, "error_status": 429, "retry_after_s": 7})
    r = gateway.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})
    assert r.status_code == 429 and r.headers["retry-after"] == "7"  # the last upstream's own
    assert r.json()["error"]["code"] == "rate_limit_exceeded" and r.json()["error"]["type"] == "rate_limit_error"
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 429})
    cloud_sim[0].behaviour.update({"fail_next": 1, "error_status": 429, "retry_after_s": 0})
    r = gateway.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1  # computed when none was sent
    with pytest.raises(openai.RateLimitError):
        local_sim[0].behaviour.update({"fail_next": 1, "error_status": 429})
        cloud_sim[0].behaviour.update({"fail_next": 1, "error_status": 429})
        gateway.client.chat.completions.create(model="local", messages=user())


def test_open_breakers_give_503_with_retry_after(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(breaker={"failure_threshold": 1, "reset_after_s": 30})
    # 503s: overload says something about each upstream. (Two plain 500s for one request open nothing:
    # the request is the common factor, tests/test_faults_breaker.py.)
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 503})
    cloud_sim[0].behaviour.update({"fail_next": 1, "error_status": 503})
    assert gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user()}).status_code == 503
    r = gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert 25 <= int(r.headers["retry-after"]) <= 30  # until the first breaker lets a probe through


def test_mid_stream_cut_ends_with_error_event_then_done(gateway, local_sim):
    local_sim[0].behaviour.update({"cut_after_tokens": 5})
    with gateway.http.stream("POST", "/v1/chat/completions",
                             json={"model": "local", "messages": user(), "stream": True}) as r:
        assert r.status_code == 200
        frames = _sse_frames(r)
    assert frames[-1] == "[DONE]"
    assert '"error"' in frames[-2] and "broke" in frames[-2]
    assert sum('"content"' in f for f in frames[:-2]) == 6  # role chunk + 5 tokens


def test_mid_stream_cut_raises_in_the_sdk_not_a_hang(gateway, local_sim):
    local_sim[0].behaviour.update({"cut_after_tokens": 3})
    stream = gateway.client.chat.completions.create(model="local", messages=user(), stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_mid_stream_hang_ends_with_error_after_idle_timeout(gateway, local_sim):
    local_sim[0].behaviour.update({"hang_after_tokens": 4})
    started = time.perf_counter()
    with gateway.http.stream("POST", "/v1/chat/completions",
                             json={"model": "local", "messages": user(), "stream": True}) as r:
        frames = _sse_frames(r)
    assert frames[-1] == "[DONE]" and "timed out" in frames[-2]
    assert 0.9 < time.perf_counter() - started < 10  # idle_s is 1.0 in tests: ended by it, not later


def _upstream_outcome(sim, request_id: str, wait_s: float) -> str:
    """How the upstream request forwarded with this x-request-id ended, once it has."""
    deadline = time.monotonic() + wait_s
    while True:
        records = [r for r in list(sim.received) if r["x-request-id"] == request_id]
        if (records and records[-1]["outcome"] != "started") or time.monotonic() > deadline:
            return records[-1]["outcome"] if records else "missing"
        time.sleep(0.02)


def test_client_disconnect_cancels_upstream(gateway, local_sim):
    local_sim[0].behaviour.update({"tokens_per_s": 50.0, "output_tokens": 500})  # a 10 s answer
    with gateway.http.stream("POST", "/v1/chat/completions", headers={"x-request-id": "leave-early"},
                             json={"model": "local", "messages": user(), "stream": True}) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 6:
                break
    assert _upstream_outcome(local_sim[0], "leave-early", wait_s=3) == "disconnected"


def test_client_disconnect_while_upstream_is_silent_cancels_upstream(make_gateway, local_sim):
    slow = {"connect_s": 1, "first_token_s": 60, "idle_s": 60, "total_s": 120}
    gw = make_gateway(backends={"vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B",
                                               "api_base": f"{local_sim[1].base}/v1", "timeouts": slow}})
    local_sim[0].behaviour.update({"hang_after_tokens": 2})
    with gw.http.stream("POST", "/v1/chat/completions", headers={"x-request-id": "leave-silent"},
                        json={"model": "local", "messages": user(), "stream": True}) as r:
        next(r.iter_lines())
    # The gateway's own idle timeout is 60 s here: only the client leaving can have closed it.
    assert _upstream_outcome(local_sim[0], "leave-silent", wait_s=20) == "disconnected"


def test_circuit_breaker_opens_then_probes(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(breaker={"failure_threshold": 2, "reset_after_s": 1.5})
    local_sim[0].behaviour.update({"fail_next": 2})
    for _ in range(2):
        gw.client.chat.completions.create(model="local", messages=user())
    ready = gw.http.get("/readyz").json()
    assert ready["upstreams"]["vllm-local"]["breaker"] == "open"
    raw = gw.client.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.headers["x-qroute-attempts"] == "local:circuit_open,cloud:ok"
    assert local_sim[0].stats["requests"] == 2  # the open breaker kept the third request away
    time.sleep(1.6)
    raw = gw.client.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.headers["x-qroute-attempts"] == "local:ok"  # the half-open probe succeeded
    assert gw.http.get("/readyz").json()["upstreams"]["vllm-local"]["breaker"] == "closed"
