"""Fault tests, clients and the process: a client that leaves (streamed and not) cancels its upstream
request and frees its connection; a starved pool shows in the metrics and in /readyz; SIGTERM with
requests in flight lets them finish and exits within its bound."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from aiohttp import web

from simulator.harness import free_port
from tests.conftest import CLIENT_KEY, config_dict, user
from tests.fakes import FakeUpstream, answer_frames, local_backend, send_frames
from tests.test_failures import _upstream_outcome
from tests.test_metrics import scrape, value

CHAT = "/v1/chat/completions"


def readyz(gw) -> dict:
    return httpx.get(f"{gw.base}/readyz", timeout=10).json()


def wait_for(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_non_streaming_client_that_leaves_cancels_the_upstream_request(make_gateway, local_sim):
    gw = make_gateway(backends=local_backend(local_sim[1].base, first_token_s=30, idle_s=30))
    local_sim[0].behaviour.update({"tokens_per_s": 20.0, "output_tokens": 400})  # a 20 s answer
    with pytest.raises(httpx.ReadTimeout):
        gw.http.post(CHAT, json={"model": "local", "messages": user()}, headers={"x-request-id": "left-json"},
                     timeout=1.5)
    assert _upstream_outcome(local_sim[0], "left-json", wait_s=5) == "disconnected"
    assert wait_for(lambda: value(scrape(gw), "qroute_requests_total", outcome="cancelled") == 1)
    samples = scrape(gw)
    assert value(samples, "qroute_backend_in_flight", backend="vllm-local") == 0
    assert value(samples, "qroute_fallbacks_total") == 0  # not retried elsewhere for nobody


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_before_the_first_token_frees_the_connection(make_gateway, stream):
    async def silent(request: web.Request, body: dict) -> web.StreamResponse:
        return await send_frames(request, answer_frames(), hang_after=0)

    with FakeUpstream(silent) as up:
        gw = make_gateway(backends=local_backend(up.base, first_token_s=60, idle_s=60, total_s=120))
        with pytest.raises(httpx.ReadTimeout):
            gw.http.post(CHAT, json={"model": "local", "messages": user(), "stream": stream}, timeout=1.0)
        assert up.wait_ended(1, timeout_s=5) == ["disconnected"]  # the gateway hung up on the upstream
        assert wait_for(lambda: readyz(gw)["upstreams"]["vllm-local"]["in_flight"] == 0, 5)


def test_a_starved_pool_is_counted_and_makes_the_backend_unready(make_gateway):
    async def slow(request: web.Request, body: dict) -> web.StreamResponse:
        return await send_frames(request, answer_frames(), hang_after=0)

    with FakeUpstream(slow) as up:
        backends = local_backend(up.base, first_token_s=60, idle_s=60, total_s=120)
        backends["vllm-local"]["max_connections"] = 2
        gw = make_gateway(backends=backends, fallback={"max_attempts": 1})

        def hold() -> None:  # a client that gives up after 4 s, and so leaves
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{gw.base}{CHAT}", json={"model": "local", "messages": user(), "stream": True},
                           headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=4)

        threads = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
        for t in threads[:2]:
            t.start()
        assert wait_for(lambda: readyz(gw)["upstreams"]["vllm-local"]["in_flight"] == 2, 3)
        body = readyz(gw)
        assert body["upstreams"]["vllm-local"]["pool_full"] is True
        assert body["upstreams"]["vllm-local"]["accepting"] is False and body["ready"] is True  # the cloud can
        threads[2].start()  # finds no free connection
        assert wait_for(lambda: value(scrape(gw), "qroute_upstream_pool_full_total", backend="vllm-local") == 1, 3)
        for t in threads:
            t.join(10)
        # They all left: their upstream requests were cancelled and the pool is free again.
        assert wait_for(lambda: readyz(gw)["upstreams"]["vllm-local"]["in_flight"] == 0, 10)
        assert readyz(gw)["upstreams"]["vllm-local"]["pool_full"] is False
        assert up.wait_ended(3, 10).count("disconnected") >= 2


def test_sigterm_with_requests_in_flight(local_sim, cloud_sim, tmp_path):
    """The answers in flight finish, new connections are refused, and the process exits within its
    shutdown bound (server.shutdown_grace_s)."""
    port = free_port()
    cfg = config_dict(local_sim[1].base, cloud_sim[1].base, server={"port": port, "shutdown_grace_s": 3})
    path = tmp_path / "qroute.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {**os.environ, "QROUTE_TEST_DASHSCOPE_KEY": "sk-test"}
    qroute = Path(sys.executable).parent / "qroute"
    proc = subprocess.Popen([str(qroute), "serve", "--config", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1])
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _up(base), 30), "gateway did not start"
        local_sim[0].behaviour.update({"tokens_per_s": 40.0, "output_tokens": 60})  # ~1.5 s answers
        results: dict[str, object] = {}

        def ask(name: str, stream: bool) -> None:
            try:
                with httpx.Client(base_url=base, headers={"authorization": f"Bearer {CLIENT_KEY}"},
                                  timeout=30) as client:
                    r = client.post(CHAT, json={"model": "local", "messages": user(), "stream": stream})
                    results[name] = (r.status_code, r.text)
            except httpx.HTTPError as exc:
                results[name] = exc

        threads = [threading.Thread(target=ask, args=(f"r{i}", i % 2 == 0)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.4)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it is done
        assert time.monotonic() - started < 15  # shutdown_grace_s plus start-up slack, not total_s
        for name, outcome in results.items():
            assert isinstance(outcome, tuple), f"{name}: {outcome!r}"
            status, text = outcome
            assert status == 200, f"{name}: {text[:200]}"
            if name in ("r0", "r2"):
                assert text.rstrip().endswith("data: [DONE]")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
