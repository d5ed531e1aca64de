"""Capacity: the simulator's capacity model (a queue above max_running, a shared decode throughput, both in
its vLLM /metrics) and `qroute bench` run as a process against it: levels, the knee, the suggested
max_concurrent, the chart, and its errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.capacity import BenchSpec, LevelStats, Limits, analyse, chat_url, percentile
from gateway.cli import build_parser, main
from gateway.commands.bench import format_table, setting_lines
from simulator.app import SimulatedUpstream
from simulator.behaviour import Behaviour
from simulator.harness import ServerThread, free_port
from simulator.server import SimOptions, build_upstreams
from tests.test_sim_metrics import LABELS, MODEL, scrape, value

QROUTE = [sys.executable, "-m", "gateway.cli", "bench"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NO_THINKING = '{"chat_template_kwargs": {"enable_thinking": false}}'
# 200 tokens/s per request, 600 shared: from 4 running each gets 150; at most 4 run, the rest wait.
CAPACITY = {"ttft_s": 0.02, "tokens_per_s": 200.0, "total_tokens_per_s": 600.0, "max_running": 4,
            "output_tokens": 40}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QROUTE, "--no-progress", *args], capture_output=True, text=True, timeout=120)


def sim(**behaviour: Any) -> ServerThread:
    return ServerThread(SimulatedUpstream(Behaviour.for_flavour("vllm", zero_delay=True, **behaviour)))


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("capacity") / "cap.json"
    with sim(**CAPACITY) as server:
        proc = run("--base-url", f"{server.base}/v1", "--model", MODEL, "--concurrency", "1,2,4,8",
                   "--requests", "8", "--max-tokens", "40", "--extra-body", NO_THINKING,
                   "--max-ttft-p95", "0.2", "--min-tokens-per-s", "120", "--backend", "vllm-local",
                   "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text()), out.with_suffix(".png")


def levels_of(data: dict[str, Any]) -> list[LevelStats]:
    return [LevelStats(**lv) for lv in data["levels"]]


def test_levels_show_the_queue_and_the_shared_throughput(measured):
    _, data, _ = measured
    levels = {lv["concurrency"]: lv for lv in data["levels"]}
    assert list(levels) == [1, 2, 4, 8]
    for lv in levels.values():
        assert lv["requests"] == 8 and lv["ok"] == 8 and lv["errors"] == 0 and lv["error_kinds"] == {}
        assert lv["output_tokens_mean"] == 40  # from the usage chunk
        assert lv["ttft_p50_s"] >= 0.02
    # Per-request speed: 200 tokens/s up to 3 running, 600 / 4 = 150 from 4 running on.
    for c in (1, 2):
        assert levels[c]["tokens_per_s_p50"] == pytest.approx(200, rel=0.15)
    for c in (4, 8):
        assert levels[c]["tokens_per_s_p50"] == pytest.approx(150, rel=0.15)
        assert levels[c]["tokens_per_s_p50"] < 0.85 * levels[2]["tokens_per_s_p50"]
    # Total throughput grows until it is shared, then stays.
    assert levels[4]["throughput_tokens_per_s"] > 2.2 * levels[1]["throughput_tokens_per_s"]
    assert levels[8]["throughput_tokens_per_s"] == pytest.approx(levels[4]["throughput_tokens_per_s"], rel=0.25)
    # Past max_running, half the requests wait a whole answer (~0.28 s) for a slot: TTFT grows.
    for c in (1, 2, 4):
        assert levels[c]["ttft_p50_s"] < 0.1
    assert levels[8]["ttft_p95_s"] > levels[4]["ttft_p95_s"] + 0.15
    assert levels[8]["ttft_p95_s"] > 0.2 and not levels[8]["within_limits"]


def test_the_knee_and_the_setting_are_printed(measured):
    proc, data, _ = measured
    assert data["knee"]["concurrency"] == 4 and data["knee"]["status"] == "found"
    assert data["limits"] == {"max_ttft_p95_s": 0.2, "min_tokens_per_s": 120.0, "source": "given"}
    assert data["suggestion"]["max_concurrent"] == 4 and data["suggestion"]["backend"] == "vllm-local"
    assert 0 <= data["suggestion"]["max_queue_wait_s"] <= 0.2
    assert data["settings"]["levels"] == [1, 2, 4, 8] and "api_key" not in data["settings"]
    lines = proc.stdout.splitlines()
    assert any(line.split() == ["backends.vllm-local.max_concurrent:", "4"] for line in lines), proc.stdout
    assert any(line.startswith("knee: concurrency 4") for line in lines)
    row = next(line.split() for line in lines if line.split()[:1] == ["8"])
    assert row[1:3] == ["8", "0"] and row[-2:] == ["no:", "ttft"]
    assert "results written to" in proc.stderr and "Traceback" not in proc.stderr


def test_the_chart_is_a_png(measured):
    _, _, png = measured
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and 20_000 < len(data) < 1_000_000


def test_other_limits_move_the_knee(measured):
    """The knee follows the limits: a higher tokens/s floor stops at 2 running (4 share 600 tokens/s);
    loose limits reach the top level (raise --concurrency); limits even one request misses have none."""
    _, data, _ = measured
    spec = BenchSpec(base_url="http://127.0.0.1:1/v1", model=MODEL, levels=(1, 2, 4, 8), requests=8)

    def knee(limits: Limits):
        return analyse(spec, limits, levels_of(data), "t", 1.0)

    result = knee(Limits(min_tokens_per_s=180))
    assert (result.knee.concurrency, result.knee.status) == (2, "found")
    assert setting_lines(result, "gpu0") == ["backends.gpu0.max_concurrent: 2"]  # no TTFT limit: no wait
    result = knee(Limits(max_ttft_p95_s=5.0))
    assert (result.knee.concurrency, result.knee.status) == (8, "above-range")
    assert "raise --concurrency" in result.knee.message
    assert setting_lines(result, "b")[0].startswith("backends.b.max_concurrent: 8  # at least")
    result = knee(Limits(max_ttft_p95_s=0.001))
    assert (result.knee.concurrency, result.knee.status) == (None, "none-within")
    assert "even concurrency 1" in result.knee.message
    assert "no max_concurrent to suggest" in format_table(result, "b")
    result = knee(Limits())  # none given: relative to concurrency 1 (2x TTFT p95, 0.8x tokens/s)
    assert result.limits.source.startswith("no limits given")
    assert result.knee.concurrency == 2  # 150 tokens/s at 4 is under 0.8 x 200


def test_refused_connection_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "cap.json"
    proc = run("--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model", MODEL, "--out", str(out))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("qroute bench: cannot connect to http://127.0.0.1:")
    assert not out.exists()


def test_4xx_and_a_failing_first_request_are_one_line_and_exit_2(tmp_path):
    with sim() as server:
        proc = run("--base-url", server.base, "--model", "gpt-9", "--out", str(tmp_path / "a.json"))
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == "qroute bench: HTTP 404: The model `gpt-9` does not exist.\n"
        httpx.post(f"{server.base}/sim/config", json={"fail_next": 5, "error_status": 503})
        proc = run("--base-url", server.base, "--model", MODEL, "--out", str(tmp_path / "b.json"))
        assert proc.returncode == 2
        assert proc.stderr == "qroute bench: HTTP 503: simulated upstream failure (503)\n"  # after 3 attempts
        assert httpx.get(f"{server.base}/sim/requests").json()["stats"]["errors"] == 3


def test_failed_requests_in_a_level_are_counted_not_fatal(tmp_path):
    out = tmp_path / "cap.json"
    with sim(fail_next=3, error_status=503) as server:
        proc = run("--base-url", server.base, "--model", MODEL, "--concurrency", "1,2", "--requests", "6",
                   "--warmup", "0", "--max-tokens", "8", "--out", str(out), "--png", str(tmp_path / "c.png"))
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(out.read_text())["levels"]
    assert (first["requests"], first["ok"], first["errors"], first["error_kinds"]) == (6, 3, 3, {"HTTP 503": 3})
    assert not first["within_limits"] and first["outside"][0] == "3 error(s)"
    assert (second["ok"], second["errors"]) == (6, 0)
    assert "first error: HTTP 503: simulated upstream failure (503)" in proc.stdout
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("args, message", [
    (["--concurrency", "2,1"], "--concurrency '2,1': levels must be increasing, each once"),
    (["--concurrency", "1,x"], "--concurrency '1,x': expected positive integers separated by commas, e.g. 1,2,4,8"),
    (["--requests", "0"], "--requests 0: must be at least 1"),
    (["--max-ttft-p95", "0"], "--max-ttft-p95 0: must be above 0"),
    (["--prompt", "a", "--prompt-file", "b"], "give --prompt or --prompt-file, not both"),
    (["--extra-body", "[1]"], "--extra-body: expected a JSON object"),
    (["--bogus"], "unrecognized arguments: --bogus (see --help)"),
    (["--requests", "many"], "argument --requests: invalid int value: 'many' (see --help)"),
])
def test_bad_flags_are_one_line_and_exit_2(args, message, capsys):
    try:
        code = main(["bench", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--no-progress", *args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err == f"qroute bench: {message}\n"


def test_base_urls_and_percentiles():
    assert chat_url("http://h:8000") == "http://h:8000/v1/chat/completions"
    assert chat_url("http://h:4000/v1/") == "http://h:4000/v1/chat/completions"
    assert chat_url("https://x/compatible-mode/v1") == "https://x/compatible-mode/v1/chat/completions"
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)


# --- the simulator's capacity model ------------------------------------------------------------

def test_defaults_are_unlimited_and_sim_flags_set_the_local_model():
    for flavour in ("vllm", "dashscope"):
        b = Behaviour.for_flavour(flavour)  # type: ignore[arg-type]
        assert (b.max_running, b.total_tokens_per_s) == (0, 0.0)
    args = build_parser().parse_args(["sim", "--local-max-running", "3", "--local-total-tps", "225"])
    assert (args.local_max_running, args.local_total_tps) == (3, 225.0)
    local, cloud = build_upstreams(SimOptions(local_max_running=3, local_total_tps=225))
    assert (local.behaviour.max_running, local.behaviour.total_tokens_per_s) == (3, 225.0)
    assert (cloud.behaviour.max_running, cloud.behaviour.total_tokens_per_s) == (0, 0.0)
    local, _ = build_upstreams(SimOptions())
    assert (local.behaviour.max_running, local.behaviour.total_tokens_per_s) == (0, 0.0)


def test_whole_answers_share_the_throughput_too():
    """Three non-streamed 30-token answers sharing 300 tokens/s take ~0.3 s each; alone, ~0.1 s."""
    with sim(total_tokens_per_s=300.0) as server:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30,
                "chat_template_kwargs": {"enable_thinking": False}}

        async def answers(n: int) -> float:
            async with httpx.AsyncClient(base_url=server.base, timeout=10) as client:
                started = time.perf_counter()
                replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(n)))
                assert all(r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 30 for r in replies)
                return time.perf_counter() - started

        alone, shared = asyncio.run(answers(1)), asyncio.run(answers(3))
    assert 0.08 < alone < 0.2
    assert 0.27 < shared < 0.5


def test_metrics_report_the_real_queue():
    """5 streams, 2 may run: /metrics says 2 running and 3 waiting (plus waiting_requests); a higher
    max_running lets them in at once; clients that leave free their slot or their place in line."""
    upstream = SimulatedUpstream(Behaviour.for_flavour("vllm", ttft_s=0.0, tokens_per_s=20.0, output_tokens=200,
                                                       max_running=2))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "chat_template_kwargs": {"enable_thinking": False}}

    def gauges(base: str) -> tuple[float, float]:
        m = scrape(base)
        return value(m, "vllm:num_requests_running", **LABELS), value(m, "vllm:num_requests_waiting", **LABELS)

    def until(base: str, expected: tuple[float, float]) -> None:
        deadline = time.monotonic() + 5
        while gauges(base) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gauges(base) == expected

    async def scenario(base: str) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            streams = [client.stream("POST", "/v1/chat/completions", json=body) for _ in range(5)]
            responses = [await s.__aenter__() for s in streams]  # headers come before a slot, as with vLLM
            assert all(r.status_code == 200 for r in responses)
            await asyncio.to_thread(until, base, (2, 3))
            upstream.behaviour.update({"waiting_requests": 4})
            assert await asyncio.to_thread(gauges, base) == (2, 7)
            assert value(await asyncio.to_thread(scrape, base), "vllm:kv_cache_usage_perc", **LABELS) >= 0.95
            upstream.behaviour.update({"waiting_requests": 0})
            for stream in streams[3:]:  # two of those in line leave
                await stream.__aexit__(None, None, None)
            await asyncio.to_thread(until, base, (2, 1))
            r = await client.post("/sim/config", json={"max_running": 10})
            assert r.json()["max_running"] == 10
            await asyncio.to_thread(until, base, (3, 0))
            for stream in streams[:3]:
                await stream.__aexit__(None, None, None)
            await asyncio.to_thread(until, base, (0, 0))
        assert upstream.engine.running == 0 and not upstream.engine.queue

    with ServerThread(upstream) as server:
        asyncio.run(scenario(server.base))
        assert upstream.stats["disconnects"] == 5
