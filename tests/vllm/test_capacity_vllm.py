"""`qroute bench` against a real vLLM (the tiny random-weight Qwen3 on the CPU): the JSON it wrote.

Skipped unless QROUTE_VLLM_CAPACITY_JSON names that file; `make test-vllm` (tests/vllm/run.sh) runs the
bench at concurrency 1 and 2, 4 requests each, 16 tokens each (ignore_eos), then this.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PATH = os.environ.get("QROUTE_VLLM_CAPACITY_JSON")
pytestmark = pytest.mark.skipif(not PATH, reason="needs a real vLLM: run `make test-vllm`")


@pytest.fixture(scope="module")
def data() -> dict:
    assert PATH
    return json.loads(Path(PATH).read_text())


def test_every_level_was_measured(data):
    assert data["settings"]["model"] == "Qwen/Qwen3-8B" and data["settings"]["levels"] == [1, 2]
    levels = data["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 2]
    for lv in levels:
        assert lv["requests"] == 4 and lv["ok"] == 4 and lv["errors"] == 0 and lv["error_kinds"] == {}
        assert lv["output_tokens_mean"] == 16  # vLLM's usage chunk, every answer max_tokens long
        assert 0 < lv["ttft_p50_s"] <= lv["ttft_p95_s"] < 30
        assert lv["tokens_per_s_p50"] > 0 and lv["throughput_tokens_per_s"] > 0
        assert lv["latency_p50_s"] >= lv["ttft_p50_s"]
    # Two in flight on one server: more tokens per second in all (continuous batching), whatever each gets.
    assert levels[1]["throughput_tokens_per_s"] > 0.8 * levels[0]["throughput_tokens_per_s"]


def test_a_knee_and_a_setting_are_named(data):
    knee = data["knee"]
    assert knee["status"] in ("found", "above-range", "none-within") and knee["message"]
    assert data["limits"]["source"].startswith("no limits given")  # relative to concurrency 1
    assert data["suggestion"]["backend"] == "vllm-local"
    assert data["suggestion"]["max_concurrent"] == knee["concurrency"]


def test_the_chart_was_written():
    assert PATH
    png = Path(PATH).with_suffix(".png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
