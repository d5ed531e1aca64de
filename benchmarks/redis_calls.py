"""What one request's Redis work costs the gateway's process, by client, against a local redis-server.

The request path's work is a key's admission (the limits' Lua script) and, for a cacheable request, a
cache lookup. Compared, side by side in one run, on the same redis-server (started here on a free port):

  redis-py pooled   redis-py's asyncio client (the gateway's client for everything off the request path):
                    the admission, then the lookup, each a call of its own (two round trips)
  redis-py pipeline the same client, both commands in one pipeline (one round trip: EVALSHA, not a Script
                    object, which would ask SCRIPT EXISTS first)
  multiplexed       gateway/redis_mux.py: both commands in one write on the shared connection

Each is measured three ways: back to back (a hot process), with 10 ms of idleness before each request
(Redis and the process asleep, as between requests of a lightly loaded gateway), and as throughput from 50
concurrent callers. Time is the caller's: from the call until the replies are in hand.

Run: `make bench-redis` (or `.venv/bin/python benchmarks/redis_calls.py`). Writes
benchmarks/results/redis_calls.json and redis_calls.md and prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.limits import _ADMIT, key_id  # noqa: E402
from gateway.redis_mux import Multiplexed  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
KID = key_id("sk-bench")
KEYS = [f"qroute:lim:{{{KID}}}:{name}" for name in ("rpm", "tpm", "conc", "spend")]
LIMITS = [10**7, 10**9, 10**4, 10**6]
CACHE_KEY = "qroute:cache:" + "0" * 64

Call = Callable[[int], Awaitable[Any]]


def clients(url: str) -> dict[str, tuple[Call, Callable[[], Awaitable[None]]]]:
    """name -> (one request's Redis work, close)."""
    from redis.asyncio import Redis

    pooled = Redis.from_url(url, decode_responses=True, max_connections=256)
    admit_py = pooled.register_script(_ADMIT)

    async def redis_py(i: int) -> Any:
        verdict = await admit_py(keys=KEYS, args=[*LIMITS, f"py-{i}", 0, "0"])
        return verdict, await pooled.get(CACHE_KEY)

    async def redis_py_pipeline(i: int) -> Any:
        async with pooled.pipeline(transaction=False) as pipe:
            # EVALSHA itself: a Script object in a pipeline first asks SCRIPT EXISTS (a round trip more)
            pipe.evalsha(admit_py.sha, len(KEYS), *KEYS, *LIMITS, f"pipe-{i}", 0, "0")
            pipe.get(CACHE_KEY)
            return await pipe.execute()

    mux = Multiplexed(url)
    admit_mux = mux.register(_ADMIT)

    async def multiplexed(i: int) -> Any:
        commands = [admit_mux(KEYS, [*LIMITS, f"mux-{i}", 0, "0"]), ("GET", CACHE_KEY)]
        futures = mux.send(commands)  # one write (the gateway sends it inside a batch with nothing else)
        return await (mux.execute(commands) if futures is None else mux.wait(commands, futures))

    async def nothing() -> None:
        return None

    async def close_both() -> None:
        await pooled.aclose()
        await mux.close()

    return {"redis-py pooled": (redis_py, nothing), "redis-py pipeline": (redis_py_pipeline, nothing),
            "multiplexed": (multiplexed, close_both)}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def sequential(calls: dict[str, Call], n: int, idle_s: float) -> dict[str, list[float]]:
    """Interleaved, one call per client per round, so machine noise hits every client alike."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    counter = 0
    for _ in range(n):
        for name, call in calls.items():
            if idle_s:
                await asyncio.sleep(idle_s)
            counter += 1
            started = time.perf_counter()
            await call(counter)
            out[name].append((time.perf_counter() - started) * 1e6)
    return out


async def throughput(call: Call, total: int, concurrency: int) -> float:
    remaining = total
    counter = 0

    async def worker() -> None:
        nonlocal remaining, counter
        while remaining > 0:
            remaining -= 1
            counter += 1
            await call(counter)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    made = clients(url)
    calls = {name: call for name, (call, _) in made.items()}
    for call in calls.values():  # connect, load the script
        for i in range(50):
            await call(-i)
    hot = await sequential(calls, args.requests, 0.0)
    idle = await sequential(calls, args.idle_requests, 0.01)
    rows: dict[str, Any] = {}
    for name, call in calls.items():
        rows[name] = {
            "hot_p50_us": pct(hot[name], 50), "hot_p99_us": pct(hot[name], 99),
            "idle_p50_us": pct(idle[name], 50), "idle_p99_us": pct(idle[name], 99),
            "ops_per_s_at_50": await throughput(call, args.concurrent_requests, 50),
        }
    for _, close in made.values():
        await close()
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [f"One request's Redis work (the admission script and a cache lookup), {results['requests']} back to "
             f"back and {results['idle_requests']} after 10 ms idle per client, interleaved; "
             f"{results['concurrent_requests']} from 50 concurrent callers.", "",
             "| client | round trips | hot p50 / p99 µs | after idle p50 / p99 µs | per second at 50 concurrent |",
             "|---|---:|---:|---:|---:|"]
    trips = {"redis-py pooled": 2, "redis-py pipeline": 1, "multiplexed": 1}
    for name, r in results["clients"].items():
        lines.append(f"| {name} | {trips[name]} | {r['hot_p50_us']:.0f} / {r['hot_p99_us']:.0f} | "
                     f"{r['idle_p50_us']:.0f} / {r['idle_p99_us']:.0f} | {r['ops_per_s_at_50']:.0f} |")
    base, mux = results["clients"]["redis-py pooled"], results["clients"]["multiplexed"]
    lines += ["", f"Machine: {results['machine']}.", "",
              f"Multiplexed against redis-py pooled: {mux['hot_p50_us'] / base['hot_p50_us']:.2f}× the time hot, "
              f"{mux['idle_p50_us'] / base['idle_p50_us']:.2f}× after idle (p50), "
              f"{mux['ops_per_s_at_50'] / base['ops_per_s_at_50']:.2f}× the calls per second at 50 concurrent."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="back-to-back requests per client")
    parser.add_argument("--idle-requests", type=int, default=300, help="requests after 10 ms idle per client")
    parser.add_argument("--concurrent-requests", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=RESULTS / "redis_calls.json")
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        import uvloop  # what `qroute serve` runs on (uvicorn's default when installed)

        rows = uvloop.run(measure(server.url, args))
    finally:
        server.stop()
    results = {"requests": args.requests, "idle_requests": args.idle_requests,
               "concurrent_requests": args.concurrent_requests, "clients": rows,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
