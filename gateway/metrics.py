"""Every Prometheus metric qroute exports, in one place, on the gateway's own registry.

The pipeline reports at named points (a request finished, a backend was entered or left, a
breaker changed, thresholds changed); this module turns each report into metric updates. Label
values are always from bounded sets: routes, configured backends and model ids, reason codes,
outcome classes. Never a key, a user, a raw path or a client-invented model name.

Names: the OpenTelemetry GenAI conventions where one exists, with their bucket boundaries
(`gen_ai_client_operation_duration_seconds`, `gen_ai_client_token_usage`,
`gen_ai_server_time_to_first_token_seconds`, `gen_ai_server_time_per_output_token_seconds`);
`qroute_` metrics in base units, counters ending in `_total`, for the rest.

With `qroute serve --workers N` prometheus-client's multiprocess mode aggregates the workers
(PROMETHEUS_MULTIPROC_DIR, set by the serve command before any worker starts); gauges say how.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from gateway.settings import Settings, TargetsConfig
from router.decide import Thresholds
from router.routes import ROUTES

if TYPE_CHECKING:
    from gateway.context import RequestState

NONE = "none"  # the label value for "not known": rejected before routing, no model, ...

# OpenTelemetry GenAI semantic conventions' explicit bucket boundaries.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# The gateway's own work: tens of microseconds to tens of milliseconds.
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
SCORE_BUCKETS = tuple(round(i / 20, 2) for i in range(1, 21))

OUTCOMES = ("ok", "client_error", "unauthorized", "rate_limited", "upstream_rejected", "upstream_error",
            "upstream_timeout", "upstream_unavailable", "overloaded", "retrieval_error", "stream_error",
            "cancelled", "internal_error")
BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
PROVIDER_NAMES = {"hosted_vllm": "vllm", "dashscope": "dashscope", "openai": "openai"}


class Recorder(Protocol):
    """What the pipeline calls. `Metrics` records; `NoMetrics` (metrics.enabled: false) does nothing."""

    enabled: bool

    def request_finished(self, state: RequestState, outcome: str) -> None: ...
    def backend_entered(self, backend: str) -> None: ...
    def backend_left(self, backend: str) -> None: ...
    def breaker_changed(self, backend: str, state: str) -> None: ...
    def thresholds_changed(self, thresholds: Thresholds) -> None: ...
    def embeddings_finished(self, model: str, outcome: str, inputs: int, tokens: int,
                            seconds: float | None) -> None: ...
    def spill_changed(self, backend: str, active: bool) -> None: ...
    def spilled(self, route: str) -> None: ...
    def admission_queue(self, backend: str, waiting: int) -> None: ...
    def admission_waited(self, backend: str, seconds: float) -> None: ...
    def shadow_event(self, event: str, cny: float, band: str, verdict: str) -> None: ...
    def redis_state(self, up: bool) -> None: ...
    def cache_lookup(self, result: str) -> None: ...
    def cache_saved(self, cny: float) -> None: ...
    def rate_limited(self, limit: str) -> None: ...
    def limit_event(self, event: str) -> None: ...
    def cache_index_miss(self) -> None: ...
    def upstream_failed(self, backend: str, blame: str, charged: bool) -> None: ...
    def upstream_misconfigured(self, backend: str, status: int) -> None: ...
    def pool_full(self, backend: str) -> None: ...
    def render(self) -> tuple[bytes, str]: ...
    def process_exiting(self) -> None: ...


class NoMetrics:
    enabled = False

    def request_finished(self, state: RequestState, outcome: str) -> None:
        return None

    def backend_entered(self, backend: str) -> None:
        return None

    def backend_left(self, backend: str) -> None:
        return None

    def breaker_changed(self, backend: str, state: str) -> None:
        return None

    def thresholds_changed(self, thresholds: Thresholds) -> None:
        return None

    def embeddings_finished(self, model: str, outcome: str, inputs: int, tokens: int,
                            seconds: float | None) -> None:
        return None

    def spill_changed(self, backend: str, active: bool) -> None:
        return None

    def spilled(self, route: str) -> None:
        return None

    def admission_queue(self, backend: str, waiting: int) -> None:
        return None

    def admission_waited(self, backend: str, seconds: float) -> None:
        return None

    def shadow_event(self, event: str, cny: float, band: str, verdict: str) -> None:
        return None

    def redis_state(self, up: bool) -> None:
        return None

    def cache_lookup(self, result: str) -> None:
        return None

    def cache_saved(self, cny: float) -> None:
        return None

    def rate_limited(self, limit: str) -> None:
        return None

    def limit_event(self, event: str) -> None:
        return None

    def cache_index_miss(self) -> None:
        return None

    def upstream_failed(self, backend: str, blame: str, charged: bool) -> None:
        return None

    def upstream_misconfigured(self, backend: str, status: int) -> None:
        return None

    def pool_full(self, backend: str) -> None:
        return None

    def render(self) -> tuple[bytes, str]:
        return b"", CONTENT_TYPE_LATEST

    def process_exiting(self) -> None:
        return None


def multiprocess_dir() -> str | None:
    """Set by `qroute serve --workers N` for its workers; prometheus-client reads the same variable."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    enabled = True

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._multiproc = multiprocess_dir()
        r = self.registry
        gen_ai = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "route"]
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "Whole request, arrival to last byte, by final route.",
            [*gen_ai, "error_type"], buckets=DURATION_BUCKETS, registry=r)
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens per request: input (prompt) or output (completion, reasoning "
            "included).", [*gen_ai, "gen_ai_token_type"], buckets=TOKEN_BUCKETS, registry=r)
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds", "Streamed requests: arrival to the first token sent.",
            gen_ai, buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds", "Streamed requests: time per output token after "
            "the first.", gen_ai, buckets=TPOT_BUCKETS, registry=r)
        self.requests = Counter(
            "qroute_requests", "Chat requests by final route, model, outcome and routing reason.",
            ["route", "model", "outcome", "reason"], registry=r)
        self.fallbacks = Counter(
            "qroute_fallbacks", "A route failed before its first token and the next one was tried.",
            ["from_route", "to_route", "cause"], registry=r)
        self.tokens = Counter(
            "qroute_tokens", "Tokens by route and model: prompt, completion (reasoning included), reasoning, "
            "cached_prompt.", ["route", "model", "type"], registry=r)
        self.cost = Counter(
            "qroute_cost_cny", "Spend in CNY: per-token prices, or the request's share of self-hosted hardware.",
            ["route", "model"], registry=r)
        self.cloud_equivalent = Counter(
            "qroute_cloud_equivalent_cost_cny", "What the same tokens would have cost at the cloud route's prices.",
            ["route", "model"], registry=r)
        self.overhead = Histogram(
            "qroute_gateway_overhead_seconds", "The gateway's own time before the answer starts (upstream "
            "excluded, retrieval and scoring included).", ["route"], buckets=FAST_BUCKETS, registry=r)
        self.scoring = Histogram(
            "qroute_router_scoring_seconds", "Time to score one request's complexity.", buckets=FAST_BUCKETS,
            registry=r)
        self.retrieval = Histogram(
            "qroute_retrieval_seconds", "Time to build a grounded context (search, fusion, rerank).",
            ["outcome"], buckets=DURATION_BUCKETS, registry=r)
        self.scores = Histogram(
            "qroute_router_score", "Complexity scores (0-1): routed by the score (auto) or pinned.",
            ["mode"], buckets=SCORE_BUCKETS, registry=r)
        self.decisions = Counter(
            "qroute_router_decisions", "Routes chosen by the router for model=auto.", ["route"], registry=r)
        self.thresholds = Gauge(
            "qroute_router_threshold", "Current routing thresholds t1 (local-think) and t2 (cloud).",
            ["threshold"], registry=r, multiprocess_mode="mostrecent")
        self.in_flight = Gauge(
            "qroute_backend_in_flight", "Requests being served by each backend now.", ["backend"], registry=r,
            multiprocess_mode="livesum")
        self.admission_waiting = Gauge(
            "qroute_admission_waiting", "Requests waiting for a slot of a backend with max_concurrent.", ["backend"],
            registry=r, multiprocess_mode="livesum")
        self.admission_wait = Histogram(
            "qroute_admission_wait_seconds", "Time a request waited for a backend slot (0: one was free), backends "
            "with max_concurrent only.", ["backend"], buckets=(0.0, *TTFT_BUCKETS), registry=r)
        self.breaker = Gauge(
            "qroute_backend_breaker_state", "Circuit breaker per backend: 0 closed, 1 half-open, 2 open.",
            ["backend"], registry=r, multiprocess_mode="livemax")
        self.hardware_rate = Gauge(
            "qroute_backend_hardware_cost_cny_per_second", "A self-hosted backend's cost per second, busy or not.",
            ["backend"], registry=r, multiprocess_mode="max")
        self.targets = Gauge(
            "qroute_target", "Ops targets from the config, for alert rules: daily_spend_cny, cloud_share, "
            "cloud_share_tolerance.", ["target"], registry=r, multiprocess_mode="max")
        self.spill_active = Gauge(
            "qroute_spill_active", "1 while a local backend is saturated and auto traffic for it spills to the "
            "cloud.", ["backend"], registry=r, multiprocess_mode="livemax")
        self.spills = Counter(
            "qroute_spilled", "Requests auto would have sent to this route that went to the cloud (auto:spill).",
            ["from_route"], registry=r)
        self.shadow_requests = Counter(
            "qroute_shadow_requests", "Shadow labelling: sent, judged, skipped_busy, skipped_budget, unreadable, "
            "failed.", ["result"], registry=r)
        self.shadow_judge_calls = Counter("qroute_shadow_judge_calls", "Calls to the judge.", registry=r)
        self.shadow_cost = Counter("qroute_shadow_cost_cny", "What shadow answers and judge calls cost.", registry=r)
        self.shadow_verdicts = Counter(
            "qroute_shadow_verdicts", "Judged pairs by score band: was local as good as the cloud (local or tie) or "
            "not (cloud)? Where the threshold should be, live.", ["band", "verdict"], registry=r)
        self.redis_up = Gauge(
            "qroute_redis_up", "1 while Redis answers within its bound, 0 while the gateway goes on without it "
            "(per-process limits, no cache); absent without redis configured.", registry=r,
            multiprocess_mode="livemin")
        self.cache_lookups = Counter(
            "qroute_cache_lookups", "Response cache lookups of cacheable requests: hit or miss.", ["result"],
            registry=r)
        self.cache_saved_cny = Counter(
            "qroute_cache_saved_cny", "What the answers served from the cache cost when they were made.", registry=r)
        self.limited = Counter(
            "qroute_rate_limited", "Requests refused by a client key's limits, by limit: rpm, tpm, concurrent, "
            "budget.", ["limit"], registry=r)
        self.limit_admissions = Counter(
            "qroute_limit_admissions", "Admissions of limited keys by who decided: view (this replica, far from "
            "the key's limits), redis (Redis's verdict, waited for), process (this process's counters: no "
            "Redis).", ["decided"], registry=r)
        self.limit_overshoots = Counter(
            "qroute_limit_view_overshoots", "Admissions made on a replica's view that Redis would have refused "
            "(other replicas used the rest of a limit within a second).", registry=r)
        self.cache_index_misses = Counter(
            "qroute_cache_index_misses", "Cache misses decided by this replica's index of stored answers, "
            "without asking Redis (part of the misses in qroute_cache_lookups_total).", registry=r)
        self.upstream_failures = Counter(
            "qroute_upstream_failures", "Failed upstream attempts by whose fault (request, config, upstream, "
            "unsure) and whether the backend's breaker was charged.", ["backend", "blame", "charged"], registry=r)
        self.misconfigured = Counter(
            "qroute_upstream_misconfigured", "Upstream 401/403/404 answers: the gateway's own configuration is "
            "wrong (key, model, api_base).", ["backend", "status"], registry=r)
        self.pool_exhausted = Counter(
            "qroute_upstream_pool_full", "Requests sent while every pooled connection of the backend was busy "
            "(they wait for one).", ["backend"], registry=r)
        self._providers = {name: PROVIDER_NAMES.get(cfg.provider, cfg.provider) for name, cfg in
                           settings.backends.items()}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._prime(settings)
        self._embeddings_metrics(settings)

    def _prime(self, settings: Settings) -> None:
        """Series that should exist from the start (zero, not absent), so rates and alerts work."""
        for name, cfg in settings.backends.items():
            self.breaker.labels(name).set(0)
            self.in_flight.labels(name)
            if cfg.max_concurrent is not None:
                self.admission_waiting.labels(name).set(0)
                self.admission_wait.labels(name)
            if cfg.hardware is not None:
                self.hardware_rate.labels(name).set(cfg.hardware.cny_per_second())
        for route in ROUTES:
            self.decisions.labels(route)
        self.thresholds_changed(Thresholds(settings.router.t1, settings.router.t2))
        self._set_targets(settings.targets)
        if settings.redis is not None:
            self.redis_up.set(1)
        for result in ("hit", "miss"):
            self.cache_lookups.labels(result)
        for route in ROUTES:
            self.spills.labels(route)
        if settings.spill.enabled:  # the backends of the local routes can spill (as Gateway._spill_states)
            for route in ("local", "local-think"):
                name = settings.routes[route].backend
                if name != settings.routes["cloud"].backend:
                    self.spill_active.labels(name).set(0)
        for limit in ("rpm", "tpm", "concurrent", "budget"):
            self.limited.labels(limit)
        for decided in ("view", "redis", "process"):
            self.limit_admissions.labels(decided)
        for name in settings.backends:
            self.pool_exhausted.labels(name)

    def _set_targets(self, targets: TargetsConfig) -> None:
        for name, value in (("daily_spend_cny", targets.daily_spend_cny), ("cloud_share", targets.cloud_share),
                            ("cloud_share_tolerance", targets.cloud_share_tolerance)):
            if value is not None:
                self.targets.labels(name).set(value)

    def _child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoised: label values come from bounded sets, and the lookup
        is most of what recording a request costs."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # --- named points ---------------------------------------------------------------------
    def request_finished(self, state: RequestState, outcome: str) -> None:
        decision = state.decision
        served = state.served
        route = served.route if served else (decision.route if decision else NONE)
        model = served.model if served else NONE
        reason = decision.reason if decision else NONE
        self._child(self.requests, route, model, outcome, reason).inc()
        for before, after in zip(state.attempts, state.attempts[1:], strict=False):
            self._child(self.fallbacks, before.route, after.route, before.result).inc()
        if decision is not None:
            self.scoring.observe(state.scoring_s)
            auto = reason.startswith("auto:")
            self._child(self.scores, "auto" if auto else "pinned").observe(decision.score)
            if auto:
                self._child(self.decisions, decision.route).inc()
        if state.retrieval_s is not None:
            self._child(self.retrieval, "ok" if outcome != "retrieval_error" else "error").observe(state.retrieval_s)
        if served is None:
            return
        gen_ai = (state.operation, self._providers.get(served.backend, NONE), served.model, served.route)
        self._child(self.operation_duration, *gen_ai, "" if outcome == "ok" else outcome).observe(state.elapsed())
        if state.overhead_s is not None:
            self._child(self.overhead, served.route).observe(state.overhead_s)
        if state.first_token_s is not None:
            self._child(self.ttft, *gen_ai).observe(state.first_token_s)
        usage = state.usage
        if usage is not None:
            self._child(self.token_usage, *gen_ai, "input").observe(usage.prompt)
            self._child(self.token_usage, *gen_ai, "output").observe(usage.completion)
            for kind, count in (("prompt", usage.prompt), ("completion", usage.completion),
                                ("reasoning", usage.reasoning), ("cached_prompt", usage.cached_prompt)):
                if count:
                    self._child(self.tokens, served.route, served.model, kind).inc(count)
            if state.first_token_s is not None and state.last_token_s is not None and usage.completion > 1:
                per_token = (state.last_token_s - state.first_token_s) / (usage.completion - 1)
                self._child(self.tpot, *gen_ai).observe(max(per_token, 0.0))
        if state.cost_cny is not None:
            self._child(self.cost, served.route, served.model).inc(state.cost_cny)
        if state.cloud_equivalent_cny is not None:
            self._child(self.cloud_equivalent, served.route, served.model).inc(state.cloud_equivalent_cny)

    def backend_entered(self, backend: str) -> None:
        self._child(self.in_flight, backend).inc()

    def backend_left(self, backend: str) -> None:
        self._child(self.in_flight, backend).dec()

    def breaker_changed(self, backend: str, state: str) -> None:
        self.breaker.labels(backend).set(BREAKER_VALUES.get(state, 2))

    def thresholds_changed(self, thresholds: Thresholds) -> None:
        self.thresholds.labels("t1").set(thresholds.t1)
        self.thresholds.labels("t2").set(thresholds.t2)

    # --- embeddings (POST /v1/embeddings, gateway/embeddings.py) --------------------------------
    def _embeddings_metrics(self, settings: Settings) -> None:
        """Labelled by configured embedder name (`none` before one is known), never the request's text."""
        r = self.registry
        self.embeddings_requests = Counter(
            "qroute_embeddings_requests", "Embeddings requests by embedder and outcome.", ["model", "outcome"],
            registry=r)
        self.embeddings_inputs = Counter(
            "qroute_embeddings_inputs", "Strings embedded (answered requests).", ["model"], registry=r)
        self.embeddings_tokens = Counter(
            "qroute_embeddings_tokens", "Tokens embedded: the endpoint's count where it reports one, else "
            "estimated.", ["model"], registry=r)
        self.embedding_seconds = Histogram(
            "qroute_embedding_seconds", "Time to embed one answered request's inputs, waiting for the "
            "embedder included.", ["model"], buckets=DURATION_BUCKETS, registry=r)
        if settings.embeddings.enabled:
            for name in settings.embeddings.models:
                self.embeddings_requests.labels(name, "ok")
                self.embeddings_inputs.labels(name)
                self.embeddings_tokens.labels(name)

    def embeddings_finished(self, model: str, outcome: str, inputs: int, tokens: int,
                            seconds: float | None) -> None:
        self._child(self.embeddings_requests, model, outcome).inc()
        if outcome != "ok":
            return
        self._child(self.embeddings_inputs, model).inc(inputs)
        self._child(self.embeddings_tokens, model).inc(tokens)
        if seconds is not None:
            self._child(self.embedding_seconds, model).observe(seconds)

    def spill_changed(self, backend: str, active: bool) -> None:
        self._child(self.spill_active, backend).set(1 if active else 0)

    def spilled(self, route: str) -> None:
        self._child(self.spills, route).inc()

    def admission_queue(self, backend: str, waiting: int) -> None:
        self._child(self.admission_waiting, backend).set(waiting)

    def admission_waited(self, backend: str, seconds: float) -> None:
        self._child(self.admission_wait, backend).observe(seconds)

    def shadow_event(self, event: str, cny: float, band: str, verdict: str) -> None:
        if event == "spend":
            self.shadow_cost.inc(cny)
        elif event == "judge_call":
            self.shadow_judge_calls.inc()
        else:
            self._child(self.shadow_requests, event).inc()
            if event == "judged":
                self._child(self.shadow_verdicts, band, verdict).inc()

    def redis_state(self, up: bool) -> None:
        self.redis_up.set(1 if up else 0)

    def cache_lookup(self, result: str) -> None:
        self._child(self.cache_lookups, result).inc()

    def cache_saved(self, cny: float) -> None:
        self.cache_saved_cny.inc(cny)

    def rate_limited(self, limit: str) -> None:
        self._child(self.limited, limit).inc()

    def limit_event(self, event: str) -> None:
        if event == "overshoot":
            self.limit_overshoots.inc()
        else:
            self._child(self.limit_admissions, event).inc()

    def cache_index_miss(self) -> None:
        self.cache_index_misses.inc()

    def upstream_failed(self, backend: str, blame: str, charged: bool) -> None:
        self._child(self.upstream_failures, backend, blame, "true" if charged else "false").inc()

    def upstream_misconfigured(self, backend: str, status: int) -> None:
        self._child(self.misconfigured, backend, str(status)).inc()

    def pool_full(self, backend: str) -> None:
        self._child(self.pool_exhausted, backend).inc()

    def process_exiting(self) -> None:
        """A worker that stops takes its live gauges (in flight, breaker) out of the sums."""
        if self._multiproc is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self._multiproc)

    # --- exposition ---------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The text exposition: this process's registry, or every worker's when there are several."""
        if self._multiproc is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self._multiproc)
        return generate_latest(merged), CONTENT_TYPE_LATEST


def build_recorder(settings: Settings) -> Recorder:
    return Metrics(settings) if settings.metrics.enabled else NoMetrics()
