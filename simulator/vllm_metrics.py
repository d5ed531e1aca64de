"""vLLM's own /metrics for the vLLM-flavoured simulator: running, waiting, KV cache, time to first
token, end-to-end latency and tokens, with vLLM's names, labels and buckets, so dashboards, alerts and
spill-over logic can be tested against what a real vLLM exports."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from math import inf
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from simulator import wire
from simulator.behaviour import Behaviour

# vLLM's names, labels and bucket boundaries (vllm/v1/metrics/loggers.py).
VLLM_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                     20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
VLLM_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                        240.0, 480.0, 960.0, 1920.0, 7680.0)
VLLM_LABELS = ["model_name", "engine"]
KV_SLOTS = 32  # requests that fill the simulated KV cache


class _Histogram:
    """Bucket counts kept as plain numbers: the simulator serves from one event loop, so recording a
    request needs no lock; prometheus-client builds the exposition from them at scrape time."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @staticmethod
    def family(name: str, documentation: str, per_model: dict[str, _Histogram]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=VLLM_LABELS)
        for model, h in per_model.items():
            cumulative = list(accumulate(h.counts))
            buckets = [(floatToGoString(b), float(c)) for b, c in zip((*h.bounds, inf), cumulative, strict=True)]
            family.add_metric([model, "0"], buckets, h.total)
        return family


class _Served:
    """What one model of the simulated vLLM has served."""

    __slots__ = ("e2e", "generation_tokens", "prompt_tokens", "ttft")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = _Histogram(VLLM_TTFT_BUCKETS)
        self.e2e = _Histogram(VLLM_LATENCY_BUCKETS)


class _Meter:
    """One chat request being served: wraps the ASGI send to see its status, first and last bytes."""

    __slots__ = ("body", "chunks", "downstream", "finished", "first_s", "payload", "served", "started", "status")

    def __init__(self, body: dict[str, Any], served: _Served, downstream: Any) -> None:
        self.body, self.served, self.downstream = body, served, downstream
        self.started = time.perf_counter()
        self.first_s: float | None = None
        self.status = 0
        self.chunks = 0  # streamed frames sent
        self.finished = False
        self.payload = b""

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body":
            if self.first_s is None:
                self.first_s = time.perf_counter() - self.started
            if message.get("more_body"):
                self.chunks += 1
            else:
                self.finished = True
                if not self.chunks:
                    self.payload = message.get("body", b"")
        await self.downstream(message)

    def generation_tokens(self) -> int:
        if not self.chunks:  # a whole answer: its usage says (read without parsing the whole body)
            at = self.payload.rfind(b'"completion_tokens":')
            digits = self.payload[at + 20:at + 32].split(b",")[0].split(b"}")[0] if at >= 0 else b""
            return int(digits) if digits.strip().isdigit() else 0
        # A stream: the role frame, one frame per token, then (when it ended well) finish and usage frames.
        tail = (1 + bool((self.body.get("stream_options") or {}).get("include_usage"))) if self.finished else 0
        return max(self.chunks - 1 - tail, 0)


class VllmMetrics:
    """vLLM's own Prometheus metrics for the vLLM-flavoured simulator, on a registry of its own: running,
    waiting, KV cache, time to first token, end-to-end latency and tokens, labelled like vLLM's."""

    def __init__(self, models: list[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a collector: prometheus-client calls collect() at each scrape
        self._served: dict[str, _Served] = {model: _Served() for model in models}
        self._models = list(models)
        self._running: dict[str, int] = {}  # by model, as the simulator's engine has them at the scrape
        self._waiting: dict[str, int] = {}  # by model: in the engine's queue, plus behaviour.waiting_requests

    def begin(self, raw: bytes, behaviour: Behaviour, send: Any) -> _Meter | None:
        """A request for a model this server serves, to be measured; None for anything else."""
        try:
            body = orjson.loads(raw)
            model = body.get("model")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        if not isinstance(model, str) or not behaviour.serves(model):
            return None
        served = self._served.get(model)
        if served is None:
            served = self._served[model] = _Served()
        return _Meter(body, served, send)

    def end(self, meter: _Meter, behaviour: Behaviour) -> None:
        served = meter.served
        if meter.status != 200:
            return
        elapsed = time.perf_counter() - meter.started
        served.e2e.observe(elapsed)
        # A whole answer arrives at once: its first token was due ttft_s after the start.
        served.ttft.observe(meter.first_s if meter.chunks and meter.first_s is not None
                            else min(behaviour.ttft_s, elapsed))
        served.prompt_tokens += wire.count_prompt_tokens(meter.body)
        served.generation_tokens += meter.generation_tokens()

    def render(self, behaviour: Behaviour, running: dict[str, int] | None = None,
               waiting: dict[str, int] | None = None) -> bytes:
        """The text exposition. `running` and `waiting`: requests running and in line for a slot, by model,
        as the simulator's engine has them now; `behaviour.waiting_requests` is added to each served
        model's queue, to simulate one; the KV cache follows."""
        self._models = list(behaviour.models)
        for model in self._models:
            self._served.setdefault(model, _Served())
        extra = max(int(behaviour.waiting_requests), 0)
        self._running = dict(running or {})
        queued = waiting or {}
        self._waiting = {m: queued.get(m, 0) + (extra if m in self._models else 0) for m in self._served}
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        served = self._served
        waiting = self._waiting
        running = {m: max(self._running.get(m, 0), 0) for m in served}
        full = 0.95 if any(waiting.values()) else 0.0  # a queue: the cache is full
        kv = min(1.0, max(sum(running.values()) / KV_SLOTS, full))
        gauges = (("vllm:num_requests_running", "Number of requests in model execution batches.",
                   {m: float(n) for m, n in running.items()}),
                  ("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                   {m: float(waiting.get(m, 0)) for m in served}),
                  ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
                   {m: kv if m in self._models else 0.0 for m in served}))
        for name, documentation, values in gauges:
            gauge = GaugeMetricFamily(name, documentation, labels=VLLM_LABELS)
            for model, value in values.items():
                gauge.add_metric([model, "0"], value)
            yield gauge
        counters = (("vllm:prompt_tokens", "Number of prefill tokens processed.", "prompt_tokens"),
                    ("vllm:generation_tokens", "Number of generation tokens processed.", "generation_tokens"))
        for name, documentation, attr in counters:
            counter = CounterMetricFamily(name, documentation, labels=VLLM_LABELS)
            for model, s in served.items():
                counter.add_metric([model, "0"], float(getattr(s, attr)))
            yield counter
        yield _Histogram.family("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                                {m: s.ttft for m, s in served.items()})
        yield _Histogram.family("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                                {m: s.e2e for m, s in served.items()})
