"""Spill-over reads vLLM's own queue from its /metrics: the parser is checked against the real vLLM
CPU server, so a renamed or relabelled metric in a new vLLM fails here, not silently in production
(where an unreadable queue is no signal at all and spill-over would go by the other signals only).

Skipped unless QROUTE_VLLM_URL points at the real vLLM (`make test-vllm`, tests/vllm/run.sh).
"""

from __future__ import annotations

import asyncio
import os
import threading

import httpx
import pytest

from gateway.spill import VllmQueueReader, parse_vllm_metrics

VLLM = os.environ.get("QROUTE_VLLM_URL")
pytestmark = pytest.mark.skipif(not VLLM, reason="needs a real vLLM: run `make test-vllm`")
QUEUE_METRICS = ("vllm:num_requests_waiting", "vllm:num_requests_running")


def test_real_metrics_carry_the_queue_the_parser_reads() -> None:
    text = httpx.get(f"{VLLM}/metrics", timeout=10).text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert set(QUEUE_METRICS) <= names, f"vLLM's /metrics lacks {set(QUEUE_METRICS) - names}"
    load = parse_vllm_metrics(text)
    assert load.waiting >= 0 and load.running >= 0


def test_reader_sees_a_request_running() -> None:
    """A long answer in flight shows up as running in what the reader reports."""
    done = threading.Event()

    def generate() -> None:
        try:
            httpx.post(f"{VLLM}/v1/completions", timeout=300, json={
                "model": "Qwen/Qwen3-8B", "prompt": "count", "max_tokens": 400, "ignore_eos": True})
        finally:
            done.set()

    async def watch() -> float:
        reader = VllmQueueReader("vllm-local", [f"{VLLM}/metrics"], poll_s=0.2)
        await reader.start()
        try:
            seen = 0.0
            while not done.is_set():
                await reader.read_once()
                if reader.load is not None:
                    seen = max(seen, reader.load.running + reader.load.waiting)
                if seen >= 1:
                    break
                await asyncio.sleep(0.1)
            return seen
        finally:
            await reader.close()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    assert asyncio.run(watch()) >= 1, "the reader never saw the request in flight"
    worker.join(timeout=300)
