"""Capacity of an OpenAI-compatible chat endpoint under concurrent load, and its knee.

At each concurrency level C, N streamed requests are sent with C in flight at once (a closed loop: a
request starts as soon as one ends), each asking for `stream_options.include_usage`. Per request: time to
the first generated token (content or reasoning), and decode speed (output tokens after the first / time
after the first). Per level: TTFT p50/p95, per-request tokens/s p50, aggregate throughput (all output
tokens / the level's wall time) and the errors. The knee is the highest level within the limits (p95
TTFT at most `max_ttft_p95_s`, per-request tokens/s p50 at least `min_tokens_per_s`, no errors): the
`max_concurrent` to give that backend in the gateway.

No global state: `run_bench(spec)` owns its HTTP session; `analyse` and `find_knee` are pure.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

DEFAULT_PROMPT = ("Explain, in about two hundred words, how continuous batching lets one GPU serve several "
                  "chat requests at once, and what happens to each request's speed as more of them share it.")
TEXT_FIELDS = ("content", "reasoning", "reasoning_content", "tool_calls")  # a delta with any: generated tokens
PROBE_ATTEMPTS = 3  # the first warm-up request, retried on 429/5xx before the endpoint is called down
RELATIVE_TTFT = 2.0  # no limits given: p95 TTFT at most 2x, and
RELATIVE_TPS = 0.8  # per-request tokens/s p50 at least 0.8x, the lowest level's


class BenchError(Exception):
    """The endpoint cannot be benchmarked at all (refused, 4xx, every request failing): one line."""


@dataclass(frozen=True)
class BenchSpec:
    base_url: str  # the OpenAI base URL (…/v1); a bare host:port gets /v1
    model: str
    levels: tuple[int, ...]
    requests: int  # per level (at least the level's concurrency)
    api_key: str | None = None
    max_tokens: int = 128
    prompt: str = DEFAULT_PROMPT
    warmup: int = 1  # requests before the levels, not measured; the first one must succeed
    timeout_s: float = 300.0
    extra_body: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return chat_url(self.base_url)


@dataclass(frozen=True)
class Limits:
    max_ttft_p95_s: float | None = None
    min_tokens_per_s: float | None = None
    source: str = "given"  # or how they were derived

    @property
    def empty(self) -> bool:
        return self.max_ttft_p95_s is None and self.min_tokens_per_s is None

    def describe(self) -> str:
        parts = []
        if self.max_ttft_p95_s is not None:
            parts.append(f"TTFT p95 <= {self.max_ttft_p95_s:.3f} s")
        if self.min_tokens_per_s is not None:
            parts.append(f"per-request tokens/s p50 >= {self.min_tokens_per_s:.1f}")
        return " and ".join(parts) + ", no errors"


@dataclass
class RequestResult:
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    output_tokens: int = 0
    tokens_per_s: float | None = None  # decode speed after the first token
    error: str | None = None  # "HTTP 503", "connection", "timeout", "stream", ...
    detail: str | None = None  # one line, for the error message


@dataclass
class LevelStats:
    concurrency: int
    requests: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    wall_s: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    tokens_per_s_p50: float | None  # per request
    throughput_tokens_per_s: float  # all output tokens / wall time
    requests_per_s: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    output_tokens_mean: float | None
    within_limits: bool = False
    outside: list[str] = field(default_factory=list)  # why not within, one phrase each


@dataclass
class Knee:
    concurrency: int | None
    status: str  # "found", "none-within" (not even the lowest level), "above-range" (the highest still within)
    message: str
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchResult:
    spec: BenchSpec
    limits: Limits
    levels: list[LevelStats]
    knee: Knee
    started_at: str
    duration_s: float
    first_error: str | None = None

    def suggestion(self, backend: str) -> dict[str, Any]:
        """The admission settings for the gateway's backend: max_concurrent at the knee, and a queue wait
        that keeps a waiting request inside the TTFT limit (the budget the knee's p95 leaves)."""
        out: dict[str, Any] = {"backend": backend, "max_concurrent": self.knee.concurrency,
                               "max_queue_wait_s": None}
        knee = next((lv for lv in self.levels if lv.concurrency == self.knee.concurrency), None)
        if knee is not None and self.limits.max_ttft_p95_s is not None and knee.ttft_p95_s is not None:
            # At least 0.1 s (the gateway wants a wait above 0): a knee at the limit leaves no budget.
            out["max_queue_wait_s"] = max(round(self.limits.max_ttft_p95_s - knee.ttft_p95_s, 2), 0.1)
        return out

    def to_json(self, backend: str) -> dict[str, Any]:
        spec = asdict(self.spec)
        spec.pop("api_key", None)  # never written
        spec["prompt_chars"] = len(spec.pop("prompt"))
        spec["url"] = self.spec.url
        return {
            "tool": "qroute bench",
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                        "python": platform.python_version()},
            "settings": spec,
            "method": ("streamed chat completions with stream_options.include_usage; per level, `requests` "
                       "requests with `concurrency` in flight at once; TTFT to the first generated token "
                       "(content or reasoning); per-request tokens/s = (output tokens - 1) / (last token - "
                       "first token); throughput = all output tokens / the level's wall time; percentiles "
                       "by linear interpolation"),
            "limits": asdict(self.limits),
            "levels": [asdict(lv) for lv in self.levels],
            "knee": asdict(self.knee),
            "suggestion": self.suggestion(backend),
        }


# --- measuring ----------------------------------------------------------------------------------

def chat_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if urlsplit(base).path in ("", "/"):
        base += "/v1"
    return base + "/chat/completions"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _error_message(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _one_line(raw.decode(errors="replace"))
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return _one_line(str(err.get("message") or err))
        return _one_line(str(err))
    return _one_line(str(body))


class _Client:
    """One benchmark's HTTP session and request bodies."""

    def __init__(self, session: aiohttp.ClientSession, spec: BenchSpec) -> None:
        self.session, self.spec = session, spec
        self.headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if spec.api_key:
            self.headers["authorization"] = f"Bearer {spec.api_key}"

    def body(self, tag: str) -> bytes:
        # A distinct first line per request: no prefix-cache or response-cache hit makes one look fast.
        payload: dict[str, Any] = {
            "model": self.spec.model, "max_tokens": self.spec.max_tokens, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": f"[{tag}]\n{self.spec.prompt}"}],
        }
        payload.update(self.spec.extra_body)
        return orjson.dumps(payload)

    async def one(self, tag: str) -> RequestResult:
        start = time.perf_counter()
        first = last = None
        chunks = 0
        usage_tokens: int | None = None
        done = False
        try:
            async with self.session.post(self.spec.url, data=self.body(tag), headers=self.headers) as resp:
                if resp.status != 200:
                    return RequestResult(False, time.perf_counter() - start, error=f"HTTP {resp.status}",
                                         detail=f"HTTP {resp.status}: {_error_message(await resp.read())}")
                if not resp.content_type.startswith("text/event-stream"):
                    return RequestResult(False, time.perf_counter() - start, error="not a stream",
                                         detail=f"answered {resp.content_type}, not an SSE stream")
                async for line in resp.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    event = orjson.loads(data)
                    if not isinstance(event, dict):
                        continue
                    if event.get("error"):
                        err = event["error"]
                        message = err.get("message", err) if isinstance(err, dict) else err
                        return RequestResult(False, time.perf_counter() - start, error="stream error",
                                             detail=f"error in the stream: {_one_line(str(message))}")
                    for choice in event.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if any(delta.get(name) for name in TEXT_FIELDS):
                            last = time.perf_counter()
                            if first is None:
                                first = last
                            chunks += 1
                    usage = event.get("usage")
                    if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                        usage_tokens = int(usage["completion_tokens"])
        except TimeoutError:
            return RequestResult(False, time.perf_counter() - start, error="timeout",
                                 detail=f"no complete answer within {self.spec.timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:
            return RequestResult(False, time.perf_counter() - start, error="connection",
                                 detail=f"cannot connect to {self.spec.url}: {_one_line(str(exc.os_error))}")
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: bad JSON, an over-long line
            return RequestResult(False, time.perf_counter() - start, error="connection",
                                 detail=_one_line(f"{type(exc).__name__}: {exc}"))
        latency = time.perf_counter() - start
        if not done:
            return RequestResult(False, latency, error="stream cut", detail="the stream ended before [DONE]")
        tokens = usage_tokens if usage_tokens is not None else chunks
        speed = None
        if first is not None and last is not None and tokens >= 2 and last > first:
            speed = (tokens - 1) / (last - first)
        return RequestResult(True, latency, ttft_s=None if first is None else first - start,
                             output_tokens=tokens, tokens_per_s=speed)

    async def level(self, concurrency: int, requests: int, on_done: Callable[[], object]) -> tuple[
            list[RequestResult], float]:
        """`requests` requests, `concurrency` in flight at once; the results and the wall time."""
        results: list[RequestResult] = []
        sent = 0

        async def worker() -> None:
            nonlocal sent
            while sent < requests:
                sent += 1
                results.append(await self.one(f"c{concurrency}-{sent}-{time.time_ns() % 10**9}"))
                on_done()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
        return results, time.perf_counter() - started

    async def warm_up(self, count: int) -> None:
        """The first request must be answered (retried on 429 and 5xx); later ones only warm the server."""
        for index in range(count):
            for attempt in range(PROBE_ATTEMPTS if index == 0 else 1):
                result = await self.one(f"warmup-{index}-{attempt}")
                if result.ok or index > 0:
                    break
                retryable = result.error == "timeout" or result.error == "HTTP 429" or (
                    (result.error or "").startswith("HTTP 5"))
                if not retryable or attempt == PROBE_ATTEMPTS - 1:
                    raise BenchError(result.detail or result.error or "the first request failed")
                await asyncio.sleep(0.5)


def level_stats(concurrency: int, results: list[RequestResult], wall_s: float) -> LevelStats:
    ok = [r for r in results if r.ok]
    kinds = Counter(r.error or "error" for r in results if not r.ok)
    tokens = sum(r.output_tokens for r in ok)
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    speed = [r.tokens_per_s for r in ok if r.tokens_per_s is not None]
    latency = [r.latency_s for r in ok]
    return LevelStats(
        concurrency=concurrency, requests=len(results), ok=len(ok), errors=len(results) - len(ok),
        error_kinds=dict(sorted(kinds.items())), wall_s=round(wall_s, 4),
        ttft_p50_s=_round(percentile(ttft, 0.5), 4), ttft_p95_s=_round(percentile(ttft, 0.95), 4),
        tokens_per_s_p50=_round(percentile(speed, 0.5), 2),
        throughput_tokens_per_s=round(tokens / wall_s, 2) if wall_s > 0 else 0.0,
        requests_per_s=round(len(ok) / wall_s, 3) if wall_s > 0 else 0.0,
        latency_p50_s=_round(percentile(latency, 0.5), 4), latency_p95_s=_round(percentile(latency, 0.95), 4),
        output_tokens_mean=round(tokens / len(ok), 2) if ok else None,
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


async def run_bench(spec: BenchSpec, on_done: Callable[[], object] = lambda: None,
                    on_level: Callable[[int], object] = lambda c: None) -> tuple[list[LevelStats], str | None]:
    """Warm up (the first request must be answered, else BenchError), then every level in order. Returns
    the levels and the first request error seen (None when every request was answered)."""
    timeout = aiohttp.ClientTimeout(total=spec.timeout_s, sock_connect=min(10.0, spec.timeout_s))
    connector = aiohttp.TCPConnector(limit=max(spec.levels), force_close=False)
    first_error: str | None = None
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = _Client(session, spec)
        await client.warm_up(spec.warmup)
        levels = []
        for concurrency in spec.levels:
            on_level(concurrency)
            results, wall = await client.level(concurrency, max(spec.requests, concurrency), on_done)
            levels.append(level_stats(concurrency, results, wall))
            if first_error is None:
                first_error = next((r.detail or r.error for r in results if not r.ok), None)
    if not any(lv.ok for lv in levels):
        raise BenchError(f"every request failed: {first_error}")
    return levels, first_error


# --- the knee -----------------------------------------------------------------------------------

def resolve_limits(limits: Limits, levels: list[LevelStats]) -> Limits:
    """No limit given: both relative to the lowest level that was answered (2x its p95 TTFT, 0.8x its
    per-request tokens/s)."""
    if not limits.empty:
        return limits
    base = next((lv for lv in levels if lv.ok), None)
    if base is None or base.ttft_p95_s is None:
        return limits
    return Limits(
        max_ttft_p95_s=round(RELATIVE_TTFT * base.ttft_p95_s, 4),
        min_tokens_per_s=None if base.tokens_per_s_p50 is None else round(RELATIVE_TPS * base.tokens_per_s_p50, 2),
        source=(f"no limits given: {RELATIVE_TTFT:g}x the p95 TTFT and {RELATIVE_TPS:g}x the per-request "
                f"tokens/s of concurrency {base.concurrency}"))


def judge(level: LevelStats, limits: Limits) -> None:
    """Set the level's within_limits and the reasons it is outside them."""
    outside = []
    if level.errors:
        outside.append(f"{level.errors} error(s)")
    if not level.ok:
        outside.append("no answers")
    if limits.max_ttft_p95_s is not None and level.ok:
        if level.ttft_p95_s is None:
            outside.append("no TTFT measured")
        elif level.ttft_p95_s > limits.max_ttft_p95_s:
            outside.append(f"TTFT p95 {level.ttft_p95_s:.3f} s > {limits.max_ttft_p95_s:.3f} s")
    if limits.min_tokens_per_s is not None and level.ok:
        if level.tokens_per_s_p50 is None:
            outside.append("no tokens/s measured")
        elif level.tokens_per_s_p50 < limits.min_tokens_per_s:
            outside.append(f"tokens/s p50 {level.tokens_per_s_p50:.1f} < {limits.min_tokens_per_s:.1f}")
    level.outside = outside
    level.within_limits = not outside


def find_knee(levels: list[LevelStats], limits: Limits) -> Knee:
    """The highest level within the limits; plainly said when none is, or when the highest tried is."""
    for level in levels:
        judge(level, limits)
    within = [lv for lv in levels if lv.within_limits]
    if not levels:
        return Knee(None, "none-within", "no levels were run")
    if not within:
        lowest = levels[0]
        return Knee(None, "none-within",
                    f"no level is within the limits ({limits.describe()}): even concurrency {lowest.concurrency} "
                    f"is outside them ({'; '.join(lowest.outside)}); this endpoint cannot meet them "
                    "(a faster backend, shorter answers, or looser limits)")
    knee = within[-1]
    notes = [f"concurrency {lv.concurrency} is outside the limits ({'; '.join(lv.outside)}) although a higher "
             "level is within them" + ("" if lv.errors else ": a noisy measurement, more --requests would steady it")
             for lv in levels if lv.concurrency < knee.concurrency and not lv.within_limits]
    if knee is levels[-1]:
        return Knee(knee.concurrency, "above-range",
                    f"the largest level tried, concurrency {knee.concurrency}, is still within the limits: "
                    "the knee is higher, raise --concurrency", notes)
    beyond = levels[levels.index(knee) + 1]
    return Knee(knee.concurrency, "found",
                f"concurrency {knee.concurrency}, the highest level within the limits (at {beyond.concurrency}: "
                f"{'; '.join(beyond.outside)})", notes)


def analyse(spec: BenchSpec, limits: Limits, levels: list[LevelStats], started_at: str, duration_s: float,
            first_error: str | None = None) -> BenchResult:
    resolved = resolve_limits(limits, levels)
    return BenchResult(spec, resolved, levels, find_knee(levels, resolved), started_at, duration_s, first_error)


def bench(spec: BenchSpec, limits: Limits, on_done: Callable[[], object] = lambda: None,
          on_level: Callable[[int], object] = lambda c: None) -> BenchResult:
    """Run the whole benchmark (its own event loop) and find the knee. Raises BenchError."""
    started_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = time.perf_counter()
    levels, first_error = asyncio.run(run_bench(spec, on_done, on_level))
    return analyse(spec, limits, levels, started_at, time.perf_counter() - t0, first_error)
