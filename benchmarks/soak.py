"""Soak: N minutes of mixed traffic at 100 concurrent through two gateway replicas, with faults.

Two `qroute serve` processes share one config and one Redis (per-key limits for the clients' key,
generous enough never to refuse; the response cache on) in front of simulated upstreams (`qroute sim`:
the local vLLM in one process, the cloud in another, so the local one can be stopped and started).
Clients send streamed and non-streamed chat requests (models auto, local and cloud; a third of the
non-streamed ones deterministic, so cached), round-robin over the replicas, while faults are injected
on a schedule (fractions of the run):

    0.20-0.30  local upstream answers 30 % of requests with 500     (errors -> fallback to the cloud)
    0.40-0.50  local upstream hangs streams after 2 tokens          (idle timeout: an error event)
    0.60-0.70  local upstream process down, then started again      (connection refused, breaker)
    0.80-0.90  Redis hangs (SIGSTOP), then dies and starts again empty on its port  (no error at all)

An error is *expected* when it is an OpenAI-shaped upstream error (upstream_*, 502/503/504, or the
same in a stream's error event) on a request that was running at some time between an upstream fault's
start and 25 s after its end (a breaker's reset time plus a request's timeouts); everything else is
*unexpected*: a 500, an error outside those windows (Redis's included: no request may fail for it), a
connection failure to the gateway, a body not in OpenAI's shape, a stream that ends without `[DONE]`.
Memory: each gateway's RSS after the warm-up (the first 10 % of the run, at most 60 s) and at the end.

Targets: zero unexpected errors, RSS growth under 10 % per gateway. Prints a table, writes
benchmarks/results/soak.json and soak.md (unless --out is given), exits 1 when a target is missed.

Run: `make bench-soak` (10 minutes) or `make bench-soak MINUTES=1`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.stack import KEY, RESULTS, Stack, rss_mib, wait_http  # noqa: E402
from gateway.limits import key_id  # noqa: E402
from simulator.harness import free_port  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

CONCURRENCY = 100
GRACE_S = 25.0  # after a fault ends: a breaker's reset plus a request's timeouts
PROMPTS = ["What is 2 + 2?", "Summarise continuous batching in one sentence.",
           "Explain, step by step, why the sky is blue, and compare Rayleigh and Mie scattering.",
           "写一首关于春天的短诗。", "List three uses of a hash map."]
MODELS = ["auto", "auto", "local", "cloud"]
# Faults: (start, end) as fractions of the run, and what is done at each end.
FAULTS = [
    ("local 500s (30 %)", 0.20, 0.30, {"error_rate": 0.3, "error_status": 500}, {"error_rate": 0.0}),
    ("local hangs streams", 0.40, 0.50, {"hang_after_tokens": 2}, {"hang_after_tokens": -1}),
    ("local down and back", 0.60, 0.70, None, None),
]
REDIS_FAULT = ("redis hangs, then dies and starts again empty", 0.80, 0.90)
GENEROUS = {"rpm": 10**7, "tpm": 10**10, "concurrent": 10**4, "budget_cny_per_day": 10**6}
# Gateway timeouts for the run: a hung stream is cut after idle_s, not 30 s. Not tighter: on a 2-core host
# shared with the load generator, a healthy stream can pause for over 2 s at 100 concurrent.
TIMEOUTS = {"connect_s": 1.0, "first_token_s": 10.0, "idle_s": 5.0, "total_s": 30.0}
CLIENT_TIMEOUT_S = 90.0  # above every gateway timeout: the gateway must answer first
EXPECTED_STATUSES = {502, 503, 504}


@dataclass
class Outcome:
    started: float  # seconds since the run began
    latency_s: float
    stream: bool
    error: str | None = None  # None: a full answer
    expected: bool = True


@dataclass
class Windows:
    spans: list[tuple[float, float]] = field(default_factory=list)

    def covers(self, start: float, end: float | None = None) -> bool:
        """Whether a request running from start to end overlaps a fault (or its grace after)."""
        end = start if end is None else end
        return any(start <= b + GRACE_S and end >= a for a, b in self.spans)


def classify(status: int, body: bytes) -> tuple[str, bool]:
    """(what went wrong, whether an upstream fault explains it)."""
    try:
        err = json.loads(body)["error"]
        shaped = set(err) == {"message", "type", "param", "code"}
    except (ValueError, KeyError, TypeError):
        return f"{status} not in OpenAI's shape", False
    code = str(err.get("code"))
    upstream = shaped and (status in EXPECTED_STATUSES or code.startswith("upstream"))
    return f"{status} {code}", upstream


async def one(session: aiohttp.ClientSession, base: str, rng: random.Random, t0: float) -> Outcome:
    stream = rng.random() < 0.5
    body = {"model": rng.choice(MODELS), "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "stream": stream, "max_tokens": 32}
    if not stream and rng.random() < 1 / 3:
        body["temperature"] = 0  # deterministic: answered from the shared cache once stored
    started = time.perf_counter()
    outcome = Outcome(started - t0, 0.0, stream)
    try:
        async with session.post(f"{base}/v1/chat/completions", json=body,
                                headers={"authorization": f"Bearer {KEY}"}) as resp:
            if resp.status != 200:
                outcome.error, outcome.expected = classify(resp.status, await resp.read())
            elif stream:
                done, event_error = False, None
                async for line in resp.content:
                    if line.startswith(b"data: [DONE]"):
                        done = True
                    elif line.startswith(b'data: {"error"'):
                        event_error = line[6:].strip()
                if event_error is not None:
                    outcome.error, outcome.expected = classify(502, event_error)
                    outcome.error = "stream " + outcome.error
                elif not done:
                    outcome.error, outcome.expected = "stream ended without [DONE]", False
            else:
                answer = await resp.json()
                if not answer.get("choices"):
                    outcome.error, outcome.expected = "200 without choices", False
    except (TimeoutError, aiohttp.ClientError) as exc:
        outcome.error, outcome.expected = f"client: {type(exc).__name__}", False
    outcome.latency_s = time.perf_counter() - started
    return outcome


class LocalUpstream:
    """The local simulator alone, so it can go down and come back on the same port."""

    def __init__(self, workdir: Path, port: int, args: list[str]) -> None:
        self.workdir, self.port, self.args = workdir, port, args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / "local-sim.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim", "--local-port", str(self.port),
                                      "--cloud-port", str(free_port()), *self.args],
                                     stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        wait_http(f"http://127.0.0.1:{self.port}/health")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


async def sim_config(port: int, patch: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{port}/sim/config", json=patch) as r:
        r.raise_for_status()


async def redis_fault(duration: float, t0: float, redis: Any, log: list[str]) -> None:
    """Redis hangs for the first half of its window, then is killed, and starts again (empty) at its end.
    Not an upstream fault: no error is expected from it at all."""
    name, start, end = REDIS_FAULT
    await asyncio.sleep(max(0.0, t0 + start * duration - time.perf_counter()))
    began = time.perf_counter() - t0
    redis.pause()
    await asyncio.sleep(max(0.0, t0 + (start + end) / 2 * duration - time.perf_counter()))
    await asyncio.to_thread(redis.kill)
    await asyncio.sleep(max(0.0, t0 + end * duration - time.perf_counter()))
    await asyncio.to_thread(redis.start)
    log.append(f"{name}: {began:.0f}-{time.perf_counter() - t0:.0f} s")


async def schedule(duration: float, t0: float, local: LocalUpstream, windows: Windows, log: list[str]) -> None:
    for name, start, end, on, off in FAULTS:
        await asyncio.sleep(max(0.0, t0 + start * duration - time.perf_counter()))
        began = time.perf_counter() - t0
        if on is None:
            await asyncio.to_thread(local.stop)
        else:
            await sim_config(local.port, on)
        await asyncio.sleep(max(0.0, t0 + end * duration - time.perf_counter()))
        if off is None:
            await asyncio.to_thread(local.start)
        else:
            await sim_config(local.port, off)
        windows.spans.append((began, time.perf_counter() - t0))
        log.append(f"{name}: {began:.0f}-{time.perf_counter() - t0:.0f} s")


async def drive(bases: list[str], duration: float, pids: list[int], local: LocalUpstream, redis: Any,
                seed: int) -> dict[str, Any]:
    outcomes: list[Outcome] = []
    windows, fault_log = Windows(), []
    rss: dict[int, list[tuple[float, float]]] = {pid: [] for pid in pids}
    t0 = time.perf_counter()
    deadline = t0 + duration
    warmup = min(60.0, duration * 0.1)

    async def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        base = bases[i % len(bases)]
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.perf_counter() < deadline:
                outcomes.append(await one(session, base, rng, t0))

    async def memory() -> None:
        while time.perf_counter() < deadline:
            for pid in pids:
                rss[pid].append((time.perf_counter() - t0, rss_mib(pid)))
            await asyncio.sleep(2.0)

    faults = asyncio.create_task(schedule(duration, t0, local, windows, fault_log))
    redis_faults = asyncio.create_task(redis_fault(duration, t0, redis, fault_log))
    await asyncio.gather(memory(), *(client(i) for i in range(CONCURRENCY)))
    await faults
    await redis_faults
    elapsed = time.perf_counter() - t0
    for pid in pids:
        rss[pid].append((elapsed, rss_mib(pid)))
    for o in outcomes:
        if o.error is not None and o.expected and not windows.covers(o.started, o.started + o.latency_s):
            o.expected = False  # an upstream error with no fault to explain it
    return summarise(outcomes, elapsed, rss, warmup, fault_log, windows)


async def shared_state(bases: list[str]) -> dict[str, float]:
    """From the replicas' /metrics, summed: cache hits and misses, and who decided key admissions (Redis
    in use through the run, its fault included)."""
    wanted = {'qroute_cache_lookups_total{result="hit"}': "cache hits", 'qroute_cache_lookups_total{result="miss"}':
              "cache misses", 'qroute_limit_admissions_total{decided="view"}': "admitted on a replica's view",
              'qroute_limit_admissions_total{decided="redis"}': "admitted by Redis",
              'qroute_limit_admissions_total{decided="process"}': "admitted on per-process counters"}
    totals = dict.fromkeys(wanted.values(), 0.0)
    async with aiohttp.ClientSession() as session:
        for base in bases:
            async with session.get(f"{base}/metrics") as resp:
                for line in (await resp.text()).splitlines():
                    name, _, value = line.rpartition(" ")
                    if name in wanted:
                        totals[wanted[name]] += float(value)
    return totals


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def summarise(outcomes: list[Outcome], elapsed: float, rss: dict[int, list[tuple[float, float]]], warmup: float,
              fault_log: list[str], windows: Windows) -> dict[str, Any]:
    latencies = [o.latency_s for o in outcomes if o.error is None]
    calm = [o.latency_s for o in outcomes if o.error is None and not windows.covers(o.started, o.started + o.latency_s)]
    unexpected: dict[str, int] = {}
    expected: dict[str, int] = {}
    unexpected_at: list[str] = []  # when the first unexpected ones began, to line them up with the faults
    for o in outcomes:
        if o.error is not None:
            bucket = expected if o.expected else unexpected
            bucket[o.error] = bucket.get(o.error, 0) + 1
            if not o.expected and len(unexpected_at) < 20:
                unexpected_at.append(f"{o.started:.0f} s: {o.error} after {o.latency_s:.1f} s")
    memory = []
    for i, samples in enumerate(rss.values()):
        start = next((m for t, m in samples if t >= warmup), samples[0][1])
        end = samples[-1][1]
        memory.append({"gateway": i, "rss_start_mib": round(start, 1), "rss_end_mib": round(end, 1),
                       "rss_max_mib": round(max(m for _, m in samples), 1),
                       "growth": round(end / start - 1, 4) if start else 0.0})
    return {
        "seconds": round(elapsed, 1), "concurrency": CONCURRENCY, "requests": len(outcomes),
        "streamed": sum(o.stream for o in outcomes), "requests_per_s": round(len(outcomes) / elapsed, 1),
        "p50_ms": round(pct(latencies, 50) * 1000, 1), "p99_ms": round(pct(latencies, 99) * 1000, 1),
        "calm_p50_ms": round(pct(calm, 50) * 1000, 1), "calm_p99_ms": round(pct(calm, 99) * 1000, 1),
        "ok": len(latencies), "expected_errors": expected, "unexpected_errors": unexpected,
        "faults": fault_log, "unexpected_first": unexpected_at, "memory": memory, "rss_start_after_s": round(warmup, 1),
    }


def targets_met(result: dict[str, Any]) -> bool:
    return not result["unexpected_errors"] and all(m["growth"] < 0.10 for m in result["memory"])


def markdown(result: dict[str, Any], minutes: float) -> str:
    verdict = "met" if targets_met(result) else "MISSED"
    lines = [f"# Soak: {minutes:g} min, {result['concurrency']} concurrent, two gateway replicas sharing a Redis, "
             "faults injected", "",
             f"On {platform.node() or 'this machine'} ({platform.machine()}, Python {platform.python_version()}); "
             f"targets: zero unexpected errors, RSS growth under 10 % -> **{verdict}**.",
             "", "| requests | streamed | requests/s | p50 ms | p99 ms | p50 / p99 ms outside faults | ok "
             "| expected errors | unexpected errors |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {result['requests']} | {result['streamed']} | {result['requests_per_s']} | {result['p50_ms']} | "
             f"{result['p99_ms']} | {result['calm_p50_ms']} / {result['calm_p99_ms']} | {result['ok']} | "
             f"{sum(result['expected_errors'].values())} | {sum(result['unexpected_errors'].values())} |", "",
             f"| gateway | RSS after warm-up ({result['rss_start_after_s']:g} s), MiB | RSS at end, MiB | max, MiB "
             "| growth |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {m['gateway']} | {m['rss_start_mib']} | {m['rss_end_mib']} | {m['rss_max_mib']} | "
              f"{m['growth'] * 100:.1f} % |" for m in result["memory"]]
    lines += ["", "Faults: " + "; ".join(result["faults"]), ""]
    if result.get("shared_state"):
        state = ", ".join(f"{k} {v:.0f}" for k, v in result["shared_state"].items())
        lines += [f"Shared state (both replicas): {state}.", ""]
    lines += [
              "Expected errors: " + (", ".join(f"{k}: {v}" for k, v in result["expected_errors"].items()) or "none"),
              "", "Unexpected errors: " + (", ".join(f"{k}: {v}" for k, v in result["unexpected_errors"].items())
                                          or "none")]
    if result["unexpected_first"]:
        lines += ["", "First unexpected errors (start time, error, duration): " + "; ".join(result["unexpected_first"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="run length (10; CI: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "soak"), help="results path without suffix")
    args = parser.parse_args(argv)
    sim_args = ["--local-ttft", "0.05", "--local-tps", "400", "--cloud-ttft", "0.1", "--cloud-tps", "400",
                "--output-tokens", "32"]
    with tempfile.TemporaryDirectory(prefix="qroute-soak-") as tmp:
        workdir = Path(tmp)
        # The stack's simulator serves the cloud; the local one runs alone (it goes down and back).
        stack = Stack(workdir, replicas=2, sim_args=tuple(sim_args))
        local = LocalUpstream(workdir, stack.local_port, sim_args)
        redis = RedisServer()
        cfg = stack.config()
        for backend in cfg["backends"].values():
            backend["timeouts"] = TIMEOUTS
        cfg["breaker"] = {"failure_threshold": 5, "reset_after_s": 5}
        cfg["redis"] = {"url": redis.url}
        cfg["limits"] = {"keys": {key_id(KEY): GENEROUS}}
        cfg["cache"] = {"enabled": True}
        stack.write_config(cfg)
        try:
            redis.start()
            local.start()
            stack.start(local_sim=False)
            pids = [p.pid for p in stack.gateways]
            result = asyncio.run(drive(stack.bases(), args.minutes * 60, pids, local, redis, args.seed))
            result["shared_state"] = asyncio.run(shared_state(stack.bases()))
        finally:
            with contextlib.suppress(Exception):
                stack.stop()
            local.stop()
            redis.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result["minutes"] = args.minutes
    result["targets_met"] = targets_met(result)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result, args.minutes)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if result["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
