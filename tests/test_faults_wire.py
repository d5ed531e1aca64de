"""Fault tests, the wire: compressed answers, malformed chunks, upstream error text that echoes a key,
and upstream 401/403/404 answers caused by the gateway's own configuration."""

from __future__ import annotations

import httpx
import pytest
from aiohttp import web

from tests.conftest import ADMIN_KEY, user
from tests.fakes import FakeUpstream, answer_frames, completion, local_backend, send_frames, send_json
from tests.test_metrics import scrape, value

CHAT = "/v1/chat/completions"


def sse(r: httpx.Response) -> list[str]:
    return [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]


def readyz(gw) -> dict:
    """With the admin key: the configuration error is shown to operators only."""
    return httpx.get(f"{gw.base}/readyz", timeout=10, headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()


# --- gzip ---------------------------------------------------------------------------------------
async def gzipped(request: web.Request, body: dict) -> web.StreamResponse:
    if body.get("stream"):
        return await send_frames(request, answer_frames(), compress=True)
    return await send_json(request, completion(), compress=True)


@pytest.mark.parametrize(("stream", "non_streaming"), [(True, "stream"), (False, "stream"), (False, "direct")])
def test_a_gzip_proxy_in_front_of_the_upstream_is_read(make_gateway, stream, non_streaming):
    with FakeUpstream(gzipped) as up:
        backends = local_backend(up.base)
        backends["vllm-local"]["non_streaming"] = non_streaming
        gw = make_gateway(backends=backends, fallback={"max_attempts": 1})
        if stream:
            with gw.http.stream("POST", CHAT, json={"model": "local", "messages": user(), "stream": True}) as r:
                frames = sse(r)
            assert r.status_code == 200 and frames[-1] == "[DONE]" and not any('"error"' in f for f in frames)
            assert "fake" in "".join(frames)
        else:
            r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "fake answer"
        assert "gzip" in up.requests[0]["headers"].get("Accept-Encoding", "")  # advertised, and now honoured


# --- malformed chunks ---------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [b"<html>502 Bad Gateway</html>", b'{"usage": {"prompt_tokens": 3,', b"[1, 2]"])
def test_a_malformed_chunk_mid_stream_ends_with_an_error_event_and_done(make_gateway, bad):
    async def broken(request: web.Request, body: dict) -> web.StreamResponse:
        frames = answer_frames(("one", " two", " three"))
        return await send_frames(request, [*frames[:3], b"data: " + bad + b"\n\n", *frames[3:]])

    with FakeUpstream(broken) as up:
        gw = make_gateway(backends=local_backend(up.base), breaker={"failure_threshold": 5, "reset_after_s": 10})
        with gw.http.stream("POST", CHAT, json={"model": "local", "messages": user(), "stream": True}) as r:
            frames = sse(r)
        assert r.status_code == 200
        assert frames[-1] == "[DONE]"
        assert '"error"' in frames[-2] and "not a JSON object" in frames[-2]
        assert "one" in frames[1] and "html" not in "".join(frames)  # the tokens before it, never the junk
        assert readyz(gw)["upstreams"]["vllm-local"]["consecutive_failures"] == 1  # the upstream's fault
        assert value(scrape(gw), "qroute_requests_total", outcome="stream_error") == 1


def test_a_malformed_first_chunk_falls_back(make_gateway):
    async def junk(request: web.Request, body: dict) -> web.StreamResponse:
        return await send_frames(request, [b"data: not json at all\n\n", b"data: [DONE]\n\n"])

    with FakeUpstream(junk) as up:
        gw = make_gateway(backends=local_backend(up.base))
        raw = gw.client.chat.completions.with_raw_response.create(model="local", messages=user(), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert raw.headers["x-qroute-attempts"] == "local:502,cloud:ok"


# --- secrets in upstream error text --------------------------------------------------------------
LEAKED = "sk-live-0123456789abcdef"


def test_upstream_error_text_is_scrubbed_of_keys(make_gateway, monkeypatch):
    monkeypatch.setenv("QROUTE_TEST_LOCAL_KEY", LEAKED)

    async def echo(request: web.Request, body: dict) -> web.StreamResponse:
        return await send_json(request, {"error": {"message": f"upstream saw Authorization: "
                                                              f"{request.headers.get('Authorization')} and "
                                                              f"api_key={LEAKED}",
                                                   "type": "InternalServerError"}}, 500)

    with FakeUpstream(echo) as up:
        backends = local_backend(up.base)
        backends["vllm-local"]["api_key_env"] = "QROUTE_TEST_LOCAL_KEY"
        gw = make_gateway(backends=backends, fallback={"max_attempts": 1})
        r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
        assert r.status_code == 502
        assert LEAKED not in r.text and "sk-live" not in r.text and "[redacted]" in r.text
        assert up.requests[0]["headers"]["Authorization"] == f"Bearer {LEAKED}"  # it was sent, and echoed


@pytest.mark.parametrize("status", [401, 403])
def test_an_upstream_refusing_the_gateways_key_is_an_operator_error(make_gateway, monkeypatch, status):
    monkeypatch.setenv("QROUTE_TEST_LOCAL_KEY", LEAKED)

    async def refuse(request: web.Request, body: dict) -> web.StreamResponse:
        return await send_json(request, {"error": {"message": f"Incorrect API key provided: "
                                                              f"{request.headers.get('Authorization')}",
                                                   "type": "invalid_request_error", "code": "invalid_api_key"}},
                               status)

    with FakeUpstream(refuse) as up:
        backends = local_backend(up.base)
        backends["vllm-local"]["api_key_env"] = "QROUTE_TEST_LOCAL_KEY"
        gw = make_gateway(backends=backends)
        raw = gw.client.chat.completions.with_raw_response.create(model="local", messages=user())
        assert raw.headers["x-qroute-attempts"] == f"local:{status},cloud:ok"  # fell back
        gw_one = make_gateway(backends=backends, fallback={"max_attempts": 1}, auth={"admin_keys": [ADMIN_KEY]})
        r = gw_one.http.post(CHAT, json={"model": "local", "messages": user()})
        assert r.status_code == 502
        err = r.json()["error"]
        assert err["code"] == "upstream_misconfigured" and err["type"] == "upstream_error"
        assert LEAKED not in r.text and "Bearer [redacted]" in err["message"]
        info = readyz(gw_one)["upstreams"]["vllm-local"]
        assert info["accepting"] is False and LEAKED not in info["config_error"]
        assert value(scrape(gw_one), "qroute_upstream_misconfigured_total", backend="vllm-local",
                     status=str(status)) == 1


def test_a_wrong_served_model_name_is_an_operator_error_and_falls_back(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(backends={"vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Not-Served",
                                               "api_base": f"{local_sim[1].base}/v1"}},
                      auth={"admin_keys": [ADMIN_KEY]})
    raw = gw.client.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.headers["x-qroute-attempts"] == "local:404,cloud:ok"
    body = readyz(gw)
    assert body["ready"] is True  # the cloud still serves
    assert body["upstreams"]["vllm-local"]["accepting"] is False
    assert "Qwen/Not-Served" in body["upstreams"]["vllm-local"]["config_error"]
    public = httpx.get(f"{gw.base}/readyz", timeout=10).json()["upstreams"]["vllm-local"]
    assert public["accepting"] is False and "config_error" not in public and "model" not in public
    samples = scrape(gw)
    assert value(samples, "qroute_upstream_misconfigured_total", backend="vllm-local", status="404") == 1
    assert value(samples, "qroute_upstream_failures_total", backend="vllm-local", blame="config",
                 charged="true") == 1


@pytest.mark.parametrize("non_streaming", ["stream", "direct"])
def test_an_answer_of_the_wrong_shape_falls_back(make_gateway, non_streaming):
    """JSON, but not an OpenAI answer: the upstream's fault, not a 500 from the gateway."""
    async def odd(request: web.Request, body: dict) -> web.StreamResponse:
        if body.get("stream"):
            return await send_frames(request, [b'data: {"choices": "oops"}\n\n', b"data: [DONE]\n\n"])
        return await send_json(request, {"choices": "oops"})

    with FakeUpstream(odd) as up:
        backends = local_backend(up.base)
        backends["vllm-local"]["non_streaming"] = non_streaming
        gw = make_gateway(backends=backends)
        r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
        assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:502,cloud:ok"
        assert readyz(gw)["upstreams"]["vllm-local"]["consecutive_failures"] == 1


def test_scrub_removes_keys_in_the_shapes_upstreams_echo_them():
    from gateway.upstreams.scrub import scrub

    text = scrub("Incorrect API key provided: Bearer sk-abc123def456. key=sk-abc****f456, api_key: q1w2e3r4 "
                 "and the configured one: my-own-upstream-key", ["my-own-upstream-key"])
    for secret in ("sk-abc123def456", "sk-abc****f456", "q1w2e3r4", "my-own-upstream-key"):
        assert secret not in text
    assert text.startswith("Incorrect API key provided: Bearer [redacted]")
    assert len(scrub("x" * 5000)) <= 503
