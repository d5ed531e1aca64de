"""The vLLM simulator's GET /metrics: vLLM's own names, labels and buckets, counting what it served,
so the vLLM dashboard and the queue alert have something real to read in tests."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from gateway.scrape import Sample, parse
from simulator.app import SimulatedUpstream
from simulator.behaviour import Behaviour
from simulator.harness import ServerThread
from simulator.vllm_metrics import VLLM_LATENCY_BUCKETS, VLLM_TTFT_BUCKETS

MODEL = "Qwen/Qwen3-8B"
LABELS = {"model_name": MODEL, "engine": "0"}


def scrape(base: str) -> list[Sample]:
    r = httpx.get(f"{base}/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert found, f"no {name} {labels}"
    return sum(found)


def chat(base: str, stream: bool = False, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 40}], "stream": stream,
            "chat_template_kwargs": {"enable_thinking": False}, **extra}
    return httpx.post(f"{base}/v1/chat/completions", json=body, timeout=10)


@pytest.fixture
def sim():
    upstream = SimulatedUpstream(Behaviour.for_flavour("vllm", zero_delay=True))
    with ServerThread(upstream) as server:
        yield upstream, server.base


def test_series_exist_from_the_start_with_vllm_names_and_labels(sim):
    _, base = sim
    m = scrape(base)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:time_to_first_token_seconds_count", "vllm:e2e_request_latency_seconds_count"):
        assert value(m, name, **LABELS) == 0, name
    bounds = sorted(float(s.labels["le"]) for s in m
                    if s.name == "vllm:time_to_first_token_seconds_bucket" and s.labels["le"] != "+Inf")
    assert bounds == list(VLLM_TTFT_BUCKETS)
    bounds = sorted(float(s.labels["le"]) for s in m
                    if s.name == "vllm:e2e_request_latency_seconds_bucket" and s.labels["le"] != "+Inf")
    assert bounds == list(VLLM_LATENCY_BUCKETS)


def test_answers_and_streams_are_counted(sim):
    upstream, base = sim
    upstream.behaviour.update({"output_tokens": 10})
    whole = chat(base).json()
    assert chat(base, stream=True).status_code == 200
    assert chat(base, stream=True, stream_options={"include_usage": True}).status_code == 200
    m = scrape(base)
    assert value(m, "vllm:e2e_request_latency_seconds_count", **LABELS) == 3
    assert value(m, "vllm:time_to_first_token_seconds_count", **LABELS) == 3
    assert value(m, "vllm:generation_tokens_total", **LABELS) == 30  # 10 a request, frames counted exactly
    assert value(m, "vllm:prompt_tokens_total", **LABELS) == 3 * whole["usage"]["prompt_tokens"]
    assert value(m, "vllm:num_requests_running", **LABELS) == 0


def test_failures_and_unknown_models_are_not_answers(sim):
    upstream, base = sim
    upstream.behaviour.update({"fail_next": 1})
    assert chat(base).status_code == 500
    assert httpx.post(f"{base}/v1/chat/completions", json={"model": "nope", "messages": []}).status_code == 404
    assert httpx.post(f"{base}/v1/chat/completions", content=b"{bad").status_code == 400
    m = scrape(base)
    assert value(m, "vllm:e2e_request_latency_seconds_count", **LABELS) == 0
    assert value(m, "vllm:num_requests_running", **LABELS) == 0
    assert not [s for s in m if s.labels.get("model_name") == "nope"]


def test_running_queue_and_kv_cache(sim):
    upstream, base = sim
    upstream.behaviour.update({"ttft_s": 0.0, "tokens_per_s": 20.0, "output_tokens": 40})  # a 2 s answer
    done = threading.Event()

    def slow() -> None:
        chat(base, stream=True)
        done.set()

    worker = threading.Thread(target=slow, daemon=True)
    worker.start()
    deadline = time.monotonic() + 5
    running = 0.0
    while time.monotonic() < deadline and not done.is_set():
        running = value(scrape(base), "vllm:num_requests_running", **LABELS)
        if running:
            break
        time.sleep(0.02)
    assert running == 1
    assert 0 < value(scrape(base), "vllm:kv_cache_usage_perc", **LABELS) < 1
    upstream.behaviour.update({"waiting_requests": 7})
    m = scrape(base)
    assert value(m, "vllm:num_requests_waiting", **LABELS) == 7
    assert value(m, "vllm:kv_cache_usage_perc", **LABELS) >= 0.95  # a queue means the cache is full
    worker.join(timeout=10)
    assert value(scrape(base), "vllm:num_requests_running", **LABELS) == 0


def test_dashscope_flavour_has_no_metrics():
    upstream = SimulatedUpstream(Behaviour.for_flavour("dashscope", zero_delay=True))
    with ServerThread(upstream) as server:
        assert httpx.get(f"{server.base}/metrics", timeout=5).status_code == 404
