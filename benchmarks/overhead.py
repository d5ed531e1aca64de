"""Gateway overhead, side by side in one run on loopback.

Targets, all in front of the same zero-delay simulator (`qroute sim --zero-delay`):
  direct          the simulated vLLM itself (the baseline)
  qroute          `qroute serve`, direct transport (the default), metrics on (the default)
  qroute-no-metrics  the same with `metrics.enabled: false`: what recording the metrics costs
  qroute-redis    the same as qroute plus Redis (a redis-server started here on a free port): per-key
                  limits for the bench key (generous, never refusing) and the response cache on, every
                  request a cache miss (temperature 0, a new seed each): what shared state costs. Far
                  from its limits the key is admitted on the replica's view and misses are known from
                  its index of stored answers (docs/operations.md#redis-on-the-request-path)
  qroute-redis-exact  the same with `limits.local_admission_below: 0` and `cache.index_max_keys: 0`:
                  every request waits for Redis's verdict and reads the cache there, as a key near one
                  of its limits does
  qroute-litellm  `qroute serve` with `transport: litellm` (litellm.acompletion per call)
  litellm-proxy   LiteLLM's own proxy (`litellm --config`), the peer users would otherwise pick

Sequential requests are interleaved across targets (one each, round after round, in a new random
order every round) so machine noise and position hit all of them alike; added latency is a target's
percentile minus direct's. Then each target gets the same number of requests from 50 concurrent
clients: requests per second.

Run: `make bench` (or `.venv/bin/python benchmarks/overhead.py`). Writes
benchmarks/results/overhead.json and overhead.md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from gateway.limits import key_id
from simulator.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.stack import wait_http  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
KEY = "sk-bench"
MESSAGES = [{"role": "user", "content": "Summarise the benefits of continuous batching in two sentences."}]
GENEROUS_LIMITS = {"rpm": 10**7, "tpm": 10**9, "concurrent": 10**4, "budget_cny_per_day": 10**6}
SEEDS = itertools.count(1)  # qroute-redis: a new seed per request, so each is a cache miss (a lookup and a write)


@dataclass
class Target:
    name: str
    url: str
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    cache_miss: bool = False  # deterministic (temperature 0) with a seed never sent before

    def body(self, stream: bool) -> bytes:
        payload = {"model": self.model, "messages": MESSAGES, "stream": stream, "max_tokens": 64, **self.extra}
        if self.cache_miss:
            payload.update(temperature=0, seed=next(SEEDS))
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return json.dumps(payload).encode()


@dataclass
class Sample:
    latency_ms: float
    ttft_ms: float | None
    overhead_ms: float | None


async def one_request(session: aiohttp.ClientSession, target: Target, stream: bool) -> Sample:
    started = time.perf_counter()
    ttft = None
    async with session.post(target.url, data=target.body(stream),
                            headers={"content-type": "application/json", **target.headers}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {resp.status}: {(await resp.read())[:200]!r}")
        if stream:
            async for line in resp.content:
                if ttft is None and line.startswith(b"data: {") and b'"content":"' in line \
                        and b'"content":""' not in line:
                    ttft = (time.perf_counter() - started) * 1000
        else:
            await resp.read()
        own = resp.headers.get("x-qroute-overhead-ms")
    return Sample((time.perf_counter() - started) * 1000, ttft, float(own) if own else None)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def sequential(targets: list[Target], n: int, warmup: int, stream: bool) -> dict[str, list[Sample]]:
    """One request per target per round, in a new random order every round (seeded): a request
    right after the one sent straight to the simulator is measurably slower (the simulator is still
    finishing that answer), so no target may hold that place more often than another."""
    out: dict[str, list[Sample]] = {t.name: [] for t in targets}
    rng = random.Random(0)
    async with aiohttp.ClientSession() as session:
        for i in range(warmup + n):
            for target in rng.sample(targets, len(targets)):
                sample = await one_request(session, target, stream)
                if i >= warmup:
                    out[target.name].append(sample)
    return out


async def concurrent(target: Target, total: int, concurrency: int, stream: bool) -> tuple[float, list[Sample]]:
    samples: list[Sample] = []
    remaining = total
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one_request(session, target, stream) for _ in range(concurrency)))  # warm

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                samples.append(await one_request(session, target, stream))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(samples) / elapsed, samples


class Stack:
    """The processes under test; all stopped on exit."""

    def __init__(self, workdir: Path, with_proxy: bool, with_redis: bool) -> None:
        self.workdir = workdir
        self.with_proxy = with_proxy
        self.with_redis = with_redis
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Any] = []
        self.local_port, self.cloud_port = free_port(), free_port()
        self.qroute_port, self.qroute_litellm_port, self.proxy_port = free_port(), free_port(), free_port()
        self.no_metrics_port = free_port()
        self.redis_port = free_port() if with_redis else 0
        self.qroute_redis_port = free_port()
        self.qroute_redis_exact_port = free_port()

    def _spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> None:
        out = open(self.workdir / log, "wb")
        self.logs.append(out)
        self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                           env={**os.environ, **(env or {})}))

    def _qroute_config(self, transport: str, metrics: bool = True, redis: bool = False, exact: bool = False) -> Path:
        cfg = yaml.safe_load((ROOT / "deploy" / "qroute.example.yaml").read_text())
        cfg["auth"] = {"api_keys": [KEY], "api_keys_env": None}
        cfg["server"]["log_level"] = "warning"
        cfg["metrics"] = {"enabled": metrics}
        for name, port in (("vllm-local", self.local_port), ("dashscope", self.cloud_port)):
            cfg["backends"][name]["api_base"] = f"http://127.0.0.1:{port}/v1"
            cfg["backends"][name]["transport"] = transport
        name = f"qroute-{transport}{'' if metrics else '-no-metrics'}"
        if redis:
            cfg["redis"] = {"url": f"redis://127.0.0.1:{self.redis_port}/0"}
            cfg["limits"] = {"keys": {key_id(KEY): GENEROUS_LIMITS}}
            cfg["cache"] = {"enabled": True}
            name += "-redis"
            if exact:
                cfg["limits"]["local_admission_below"] = 0
                cfg["cache"]["index_max_keys"] = 0
                name += "-exact"
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def _start_redis(self) -> None:
        """A redis-server of our own on a free port (never the machine's 6379), nothing persisted."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (`make tools` installs it); or run with --no-redis")
        self._spawn([binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"], "redis.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def _proxy_config(self) -> Path:
        cfg = {
            "model_list": [
                {"model_name": "local", "litellm_params": {
                    "model": "hosted_vllm/Qwen/Qwen3-8B", "api_base": f"http://127.0.0.1:{self.local_port}/v1",
                    "extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}},
            ],
            "litellm_settings": {"num_retries": 0, "request_timeout": 60, "drop_params": True},
            "general_settings": {"master_key": KEY},
        }
        path = self.workdir / "litellm-proxy.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start(self) -> None:
        bin_dir = Path(sys.executable).parent
        qroute = str(bin_dir / "qroute")
        self._spawn([qroute, "sim", "--zero-delay", "--local-port", str(self.local_port),
                     "--cloud-port", str(self.cloud_port)], "sim.log")
        self._spawn([qroute, "serve", "--config", str(self._qroute_config("direct")),
                     "--port", str(self.qroute_port)], "qroute.log")
        self._spawn([qroute, "serve", "--config", str(self._qroute_config("direct", metrics=False)),
                     "--port", str(self.no_metrics_port)], "qroute-no-metrics.log")
        self._spawn([qroute, "serve", "--config", str(self._qroute_config("litellm")),
                     "--port", str(self.qroute_litellm_port)], "qroute-litellm.log")
        if self.with_redis:
            self._start_redis()
            self._spawn([qroute, "serve", "--config", str(self._qroute_config("direct", redis=True)),
                         "--port", str(self.qroute_redis_port)], "qroute-redis.log")
            self._spawn([qroute, "serve", "--config", str(self._qroute_config("direct", redis=True, exact=True)),
                         "--port", str(self.qroute_redis_exact_port)], "qroute-redis-exact.log")
        if self.with_proxy:
            litellm_cli = shutil.which("litellm", path=str(bin_dir)) or "litellm"
            self._spawn([litellm_cli, "--config", str(self._proxy_config()), "--host", "127.0.0.1",
                         "--port", str(self.proxy_port), "--num_workers", "1"], "litellm-proxy.log",
                        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
        wait_http(f"http://127.0.0.1:{self.local_port}/health", timeout_s=90)
        wait_http(f"http://127.0.0.1:{self.qroute_port}/healthz", timeout_s=90)
        wait_http(f"http://127.0.0.1:{self.qroute_litellm_port}/healthz")
        wait_http(f"http://127.0.0.1:{self.no_metrics_port}/healthz")
        if self.with_redis:
            wait_http(f"http://127.0.0.1:{self.qroute_redis_port}/healthz")
            wait_http(f"http://127.0.0.1:{self.qroute_redis_exact_port}/healthz")
        if self.with_proxy:
            wait_http(f"http://127.0.0.1:{self.proxy_port}/health/liveliness", timeout_s=180)

    def targets(self) -> list[Target]:
        auth = {"authorization": f"Bearer {KEY}"}
        out = [
            Target("direct", f"http://127.0.0.1:{self.local_port}/v1/chat/completions", "Qwen/Qwen3-8B",
                   extra={"chat_template_kwargs": {"enable_thinking": False}}),
            Target("qroute", f"http://127.0.0.1:{self.qroute_port}/v1/chat/completions", "local", auth),
            Target("qroute-no-metrics", f"http://127.0.0.1:{self.no_metrics_port}/v1/chat/completions", "local",
                   auth),
            Target("qroute-litellm", f"http://127.0.0.1:{self.qroute_litellm_port}/v1/chat/completions",
                   "local", auth),
        ]
        if self.with_redis:
            out.append(Target("qroute-redis", f"http://127.0.0.1:{self.qroute_redis_port}/v1/chat/completions",
                              "local", auth, cache_miss=True))
            out.append(Target("qroute-redis-exact",
                              f"http://127.0.0.1:{self.qroute_redis_exact_port}/v1/chat/completions", "local", auth,
                              cache_miss=True))
        if self.with_proxy:
            out.append(Target("litellm-proxy", f"http://127.0.0.1:{self.proxy_port}/v1/chat/completions",
                              "local", auth))
        return out

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in self.logs:
            log.close()


def paired_cost(seq: dict[str, list[Sample]], with_it: str, without: str) -> dict[str, float]:
    """What a feature costs, paired: requests go round-robin, so each round's two requests met the
    same machine state; the median of the per-round differences is far steadier than a difference
    of two medians."""
    on = [s.latency_ms for s in seq[with_it]]
    off = [s.latency_ms for s in seq[without]]
    diffs = sorted(a - b for a, b in zip(on, off, strict=True))
    return {"paired_median_ms": diffs[len(diffs) // 2], "p50_difference_ms": pct(on, 50) - pct(off, 50)}


def metrics_cost(seq: dict[str, list[Sample]]) -> dict[str, float]:
    """What recording metrics costs: qroute minus qroute-no-metrics."""
    return paired_cost(seq, "qroute", "qroute-no-metrics")


def redis_cost(seq: dict[str, list[Sample]], target: str = "qroute-redis") -> dict[str, float]:
    """What Redis costs (limits admitted and settled in Redis, a cache lookup and write per request,
    streams not cached): qroute-redis (or qroute-redis-exact) minus qroute."""
    return paired_cost(seq, target, "qroute")


def redis_decisions(base_url: str) -> dict[str, float]:
    """From the replica's /metrics: who decided its admissions (view, redis, process) and how many
    cache misses its index decided, over the whole run."""
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("qroute_limit_admissions_total{"):
            out["admitted_on_" + line.split('decided="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(("qroute_cache_index_misses_total ", "qroute_cache_lookups_total{",
                              "qroute_limit_view_overshoots_total ")):
            name = line.rsplit(" ", 1)[0].replace("qroute_", "").replace('{result="', "_").replace('"}', "")
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def summarise(seq: dict[str, list[Sample]], conc: dict[str, tuple[float, list[Sample]]]) -> dict[str, Any]:
    base = seq["direct"]
    base50 = pct([s.latency_ms for s in base], 50)
    base99 = pct([s.latency_ms for s in base], 99)
    rows = {}
    for name, samples in seq.items():
        lat = [s.latency_ms for s in samples]
        own = [s.overhead_ms for s in samples if s.overhead_ms is not None]
        rps, csamples = conc[name]
        clat = [s.latency_ms for s in csamples]
        rows[name] = {
            "seq_p50_ms": pct(lat, 50), "seq_p99_ms": pct(lat, 99),
            "added_p50_ms": pct(lat, 50) - base50, "added_p99_ms": pct(lat, 99) - base99,
            "self_reported_overhead_p50_ms": pct(own, 50) if own else None,
            "self_reported_overhead_p99_ms": pct(own, 99) if own else None,
            "c50_rps": rps, "c50_p50_ms": pct(clat, 50), "c50_p99_ms": pct(clat, 99),
        }
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for mode in ("non-streaming", "streaming"):
        rows = results[mode]
        proxy_rps = rows.get("litellm-proxy", {}).get("c50_rps")
        lines += [f"**{mode}** ({results['sequential_requests']} sequential requests per target, interleaved; "
                  f"{results['concurrent_requests']} at {results['concurrency']} concurrent)", "",
                  "| target | added p50 ms | added p99 ms | own overhead p50/p99 ms | req/s @50 | "
                  "p50/p99 ms @50 | req/s vs LiteLLM proxy |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in rows.items():
            own = (f"{r['self_reported_overhead_p50_ms']:.3f} / {r['self_reported_overhead_p99_ms']:.3f}"
                   if r["self_reported_overhead_p50_ms"] is not None else "–")
            added = ("baseline", "baseline") if name == "direct" else (f"{r['added_p50_ms']:.2f}",
                                                                        f"{r['added_p99_ms']:.2f}")
            ratio = f"{r['c50_rps'] / proxy_rps:.1f}×" if proxy_rps else "–"
            lines.append(f"| {name} | {added[0]} | {added[1]} | {own} | {r['c50_rps']:.0f} | "
                         f"{r['c50_p50_ms']:.1f} / {r['c50_p99_ms']:.1f} | {ratio} |")
        lines.append("")
    lines.append(f"Machine: {results['machine']}. Simulator with zero delay and 48-token answers.")
    lines.append("")
    for mode in ("non-streaming", "streaming"):
        cost = results[f"{mode} metrics cost"]
        lines.append(f"Metrics cost ({mode}): {cost['paired_median_ms']:+.3f} ms, the median of per-round "
                     f"differences qroute minus qroute-no-metrics ({cost['p50_difference_ms']:+.3f} ms between "
                     "their p50s); budget +0.1 ms.")
    for mode in ("non-streaming", "streaming"):
        for target, label in (("", "qroute-redis"), (" exact", "qroute-redis-exact")):
            cost = results.get(f"{mode} redis{target} cost")
            if cost is None:
                continue
            what = "limits admitted and settled in Redis, a cache lookup and write per request" \
                if mode == "non-streaming" else "limits admitted and settled in Redis; streams are not cached"
            if target:
                what += ", every request waiting for Redis"
            lines.append(f"Redis cost{target} ({mode}): {cost['paired_median_ms']:+.3f} ms, the median of per-round "
                         f"differences {label} minus qroute ({what}; {cost['p50_difference_ms']:+.3f} ms "
                         "between their p50s)" + ("; budget +0.5 ms." if not target else "."))
    d = results.get("redis decisions")
    if d:
        lines += ["", "qroute-redis over the whole run (its /metrics): admissions decided on the replica's view "
                  f"{d.get('admitted_on_view', 0):.0f}, by Redis {d.get('admitted_on_redis', 0):.0f}, on per-process "
                  f"counters {d.get('admitted_on_process', 0):.0f}; "
                  f"cache misses {d.get('cache_lookups_total_miss', 0):.0f}, "
                  f"{d.get('cache_index_misses_total', 0):.0f} of them known from the index without asking Redis; "
                  f"admissions on the view Redis would have refused: {d.get('limit_view_overshoots_total', 0):.0f}."]
    return "\n".join(lines)


async def run(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    targets = stack.targets()
    results: dict[str, Any] = {
        "sequential_requests": args.requests, "concurrent_requests": args.concurrent_requests,
        "concurrency": args.concurrency,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    for mode, stream in (("non-streaming", False), ("streaming", True)):
        print(f"[{mode}] sequential ...", flush=True)
        seq = await sequential(targets, args.requests, args.warmup, stream)
        conc = {}
        for target in targets:
            print(f"[{mode}] {args.concurrency} concurrent -> {target.name} ...", flush=True)
            conc[target.name] = await concurrent(target, args.concurrent_requests, args.concurrency, stream)
        results[mode] = summarise(seq, conc)
        results[f"{mode} metrics cost"] = metrics_cost(seq)
        if "qroute-redis" in seq:
            results[f"{mode} redis cost"] = redis_cost(seq)
            results[f"{mode} redis exact cost"] = redis_cost(seq, "qroute-redis-exact")
    if stack.with_redis:
        results["redis decisions"] = redis_decisions(f"http://127.0.0.1:{stack.qroute_redis_port}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=600, help="sequential requests per target")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--concurrent-requests", type=int, default=2000)
    parser.add_argument("--no-litellm-proxy", action="store_true", help="skip LiteLLM's proxy")
    parser.add_argument("--no-redis", action="store_true", help="skip qroute-redis (needs redis-server)")
    parser.add_argument("--out", type=Path, default=RESULTS / "overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qroute-bench-") as tmp:
        stack = Stack(Path(tmp), with_proxy=not args.no_litellm_proxy, with_redis=not args.no_redis)
        try:
            stack.start()
            results = asyncio.run(run(args, stack))
        except Exception:
            for log in Path(tmp).glob("*.log"):
                print(f"--- {log.name} (tail) ---\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            raise
        finally:
            stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table + "\n")
    print("\n" + table)
    qr = results["non-streaming"]["qroute"]
    cost = results["non-streaming metrics cost"]["paired_median_ms"]
    print(f"\nqroute non-streaming added latency p50 {qr['added_p50_ms']:.2f} ms (target <= 1.5), "
          f"p99 {qr['added_p99_ms']:.2f} ms (target <= 5); metrics add {cost:+.3f} ms (budget 0.1)")
    if "non-streaming redis cost" in results:
        print(f"Redis cost: {results['non-streaming redis cost']['paired_median_ms']:+.3f} ms non-streaming, "
              f"{results['streaming redis cost']['paired_median_ms']:+.3f} ms streaming (budget +0.5 ms p50); "
              f"every request waiting for Redis: {results['non-streaming redis exact cost']['paired_median_ms']:+.3f}"
              f" / {results['streaming redis exact cost']['paired_median_ms']:+.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
