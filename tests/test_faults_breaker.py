"""Fault tests, breakers: a half-open trial ends on every path, so a breaker never stays open forever;
one client's poison request opens no breaker and is not retried where the request itself is at fault;
/readyz says what the breakers say."""

from __future__ import annotations

import time

import httpx
import pytest
from aiohttp import web

from gateway.upstreams.breaker import BreakerState, CircuitBreaker
from tests.conftest import user
from tests.fakes import FakeUpstream, answer_frames, completion, local_backend, send_frames, send_json
from tests.test_metrics import scrape, value
from tests.test_units import FakeClock

CHAT = "/v1/chat/completions"


def readyz(gw) -> dict:
    return httpx.get(f"{gw.base}/readyz", timeout=10).json()


# --- the breaker itself ---------------------------------------------------------------------------
def test_a_trial_that_ends_without_a_verdict_frees_the_next_trial():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, reset_after_s=5, clock=clock)
    b.record_failure()
    clock.now = 5.0
    trial = b.enter()
    assert trial is not None and trial.trial and b.enter() is None  # one trial at a time
    b.end(trial)  # it failed inside the gateway, or was cancelled: no verdict on the upstream
    assert b.state is BreakerState.HALF_OPEN and b.accepting
    again = b.enter()
    assert again is not None and again.trial
    b.end(trial)  # a stale pass ends nothing: the second trial is still the one in flight
    assert b.enter() is None and not b.accepting
    b.record_success()
    b.end(again)
    assert b.state is BreakerState.CLOSED and b.accepting


def test_a_trial_never_heard_from_again_is_given_up_after_its_bound():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, reset_after_s=5, clock=clock, trial_timeout_s=30)
    b.record_failure()
    clock.now = 5.0
    assert b.enter() is not None and b.enter() is None
    clock.now = 36.0  # no request lasts longer than the trial bound: that one was lost
    assert b.accepting and b.enter() is not None


# --- a trial that fails inside the gateway --------------------------------------------------------
class Script:
    """What the fake local upstream does next: a 500, a first stream line that is not JSON, a JSON
    array for a body, or a good answer."""

    def __init__(self) -> None:
        self.mode = "ok"

    async def __call__(self, request: web.Request, body: dict) -> web.StreamResponse:
        if self.mode == "fail":
            return await send_json(request, {"error": {"message": "boom", "type": "InternalServerError"}}, 500)
        if self.mode == "not_json" and body.get("stream"):
            return await send_frames(request, [b"data: <html>proxy error</html>\n\n", b"data: [DONE]\n\n"])
        if self.mode == "not_json":
            return web.Response(body=b"<html>proxy error</html>", content_type="text/html")
        if self.mode == "array":
            return await send_json(request, [completion()])
        if body.get("stream"):
            return await send_frames(request, answer_frames())
        return await send_json(request, completion())


@pytest.mark.parametrize(("mode", "stream"), [("not_json", True), ("not_json", False), ("array", False)])
def test_a_half_open_trial_that_breaks_inside_the_gateway_does_not_wedge_the_breaker(make_gateway, mode, stream):
    script = Script()
    with FakeUpstream(script) as up:
        gw = make_gateway(backends=local_backend(up.base), breaker={"failure_threshold": 1, "reset_after_s": 0.5},
                          fallback={"max_attempts": 1})
        ask = {"model": "local", "messages": user(), "stream": stream}
        script.mode = "fail"
        assert gw.http.post(CHAT, json=ask).status_code == 502
        assert readyz(gw)["upstreams"]["vllm-local"]["breaker"] == "open"
        time.sleep(0.7)
        script.mode = mode  # the half-open trial gets an answer the gateway cannot read
        r = gw.http.post(CHAT, json=ask)
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
        assert "Traceback" not in r.text
        script.mode = "ok"
        time.sleep(0.7)  # the failed trial re-opened the breaker; the next trial is let through
        r = gw.http.post(CHAT, json={**ask, "stream": False})
        assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:ok"
        info = readyz(gw)["upstreams"]["vllm-local"]
        assert info["breaker"] == "closed" and info["trial_in_flight"] is False


def test_a_trial_whose_client_leaves_ends_the_trial(make_gateway):
    """Cancelled mid-trial (the client left while the upstream was silent): the next request may try."""
    script = Script()

    async def slow(request: web.Request, body: dict) -> web.StreamResponse:
        if script.mode == "hang":
            return await send_frames(request, answer_frames(), hang_after=0)
        return await script(request, body)

    with FakeUpstream(slow) as up:
        gw = make_gateway(backends=local_backend(up.base, first_token_s=20, idle_s=20),
                          breaker={"failure_threshold": 1, "reset_after_s": 0.5}, fallback={"max_attempts": 1})
        script.mode = "fail"
        gw.http.post(CHAT, json={"model": "local", "messages": user()})
        time.sleep(0.7)
        script.mode = "hang"
        with pytest.raises(httpx.ReadTimeout):
            gw.http.post(CHAT, json={"model": "local", "messages": user()}, timeout=1.0)
        script.mode = "ok"
        deadline = time.monotonic() + 10
        while readyz(gw)["upstreams"]["vllm-local"]["trial_in_flight"] and time.monotonic() < deadline:
            time.sleep(0.05)
        r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
        assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:ok"


# --- poison requests ------------------------------------------------------------------------------
def test_poison_requests_open_no_breaker(make_gateway, local_sim, cloud_sim):
    """Five requests that every upstream answers with 500 (the request is the common factor) leave both
    breakers closed: the valid traffic after them is served."""
    gw = make_gateway(breaker={"failure_threshold": 5, "reset_after_s": 10})
    for sim in (local_sim, cloud_sim):
        sim[0].behaviour.update({"fail_on": "POISON", "error_status": 500})
    for _ in range(6):
        r = gw.http.post(CHAT, json={"model": "local", "messages": user("POISON here")})
        assert r.status_code == 502 and r.headers["x-qroute-attempts"] == "local:500,cloud:500"
    for name in ("vllm-local", "dashscope"):
        info = readyz(gw)["upstreams"][name]
        assert info["breaker"] == "closed" and info["consecutive_failures"] == 0
    r = gw.http.post(CHAT, json={"model": "local", "messages": user("a fair question")})
    assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:ok"
    assert value(scrape(gw), "qroute_requests_total", outcome="upstream_error") == 6


def test_a_5xx_another_route_answers_counts_against_the_failing_backend(make_gateway, local_sim):
    gw = make_gateway(breaker={"failure_threshold": 2, "reset_after_s": 10})
    local_sim[0].behaviour.update({"fail_on": "hard", "error_status": 500})
    for _ in range(2):
        r = gw.http.post(CHAT, json={"model": "local", "messages": user("a hard one")})
        assert r.status_code == 200 and r.headers["x-qroute-attempts"] == "local:500,cloud:ok"
    assert readyz(gw)["upstreams"]["vllm-local"]["breaker"] == "open"  # the request was fine; local was not


@pytest.mark.parametrize("status", [400, 422])
def test_a_request_the_upstream_rejects_is_neither_retried_nor_counted(make_gateway, local_sim, cloud_sim, status):
    gw = make_gateway(breaker={"failure_threshold": 1, "reset_after_s": 10})
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": status})
    r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
    assert r.status_code == status and r.json()["error"]["type"] == "invalid_request_error"
    assert r.headers["x-qroute-attempts"] == f"local:{status}"
    assert cloud_sim[0].stats["requests"] == 0
    assert readyz(gw)["upstreams"]["vllm-local"]["breaker"] == "closed"


def test_a_5xx_whose_body_says_the_request_was_invalid_is_a_400_not_a_fallback(make_gateway, cloud_sim):
    async def invalid(request: web.Request, body: dict) -> web.StreamResponse:
        return await send_json(request, {"error": {"message": "1 validation error: messages[0].content[0].text "
                                                              "Input should be a valid string",
                                                   "type": "BadRequestError", "param": None, "code": 400}}, 500)

    with FakeUpstream(invalid) as up:
        gw = make_gateway(backends=local_backend(up.base), breaker={"failure_threshold": 1, "reset_after_s": 10})
        r = gw.http.post(CHAT, json={"model": "local", "messages": user()})
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and "valid string" in err["message"]
        assert r.headers["x-qroute-attempts"] == "local:500"
        assert cloud_sim[0].stats["requests"] == 0
        assert readyz(gw)["upstreams"]["vllm-local"]["breaker"] == "closed"


@pytest.mark.parametrize(("status", "error", "blame"), [
    (400, None, "request"), (413, None, "request"), (422, None, "request"),
    (401, None, "config"), (403, None, "config"), (404, None, "config"),
    (408, None, "upstream"), (429, None, "upstream"), (502, None, "upstream"), (503, None, "upstream"),
    (504, None, "upstream"), (500, None, "unsure"), (500, {"type": "InternalServerError", "code": 500}, "unsure"),
    (500, {"type": "BadRequestError", "code": 400}, "request"),
    (500, {"type": "internal_error", "code": "invalid_parameter_error"}, "request"),
    (500, {"message": "invalid JSON somewhere", "type": "internal_error"}, "unsure"),  # free text is not read
])
def test_the_blame_rule(status, error, blame):
    from gateway.upstreams.blame import blame_for

    assert blame_for(status, error).value == blame
