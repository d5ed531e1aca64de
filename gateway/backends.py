"""The backends a gateway calls, built once from the settings: for each, its upstream (one base URL
or a set of replicas), circuit breaker, admission queue and load meter, and what readiness needs to
tell the truth about it (a configuration error seen, its connection pool's size)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.admission import Admission
from gateway.metrics import Recorder
from gateway.settings import BackendConfig, Settings, Timeouts
from gateway.upstreams.base import Upstream
from gateway.upstreams.breaker import BreakerState, CircuitBreaker
from gateway.upstreams.http_transport import HttpUpstream
from gateway.upstreams.litellm_transport import LiteLLMUpstream
from gateway.upstreams.load import BackendLoad
from gateway.upstreams.provider import resolve_adapter
from gateway.upstreams.replicas import ReplicaSet


@dataclass
class Backend:
    name: str
    upstream: Upstream
    breaker: CircuitBreaker
    timeouts: Timeouts
    admission: Admission
    load: BackendLoad = field(default_factory=BackendLoad)
    non_streaming: str = "stream"  # BackendConfig.non_streaming
    pool_limit: int | None = None  # connections its pools hold in all (None: not pooled here)
    config_error: str | None = None  # the last upstream_misconfigured answer, until it answers again

    @property
    def pool_full(self) -> bool:
        """Every pooled connection busy: the next request waits for one (a starved pool, not an idle one)."""
        return self.pool_limit is not None and self.load.in_flight >= self.pool_limit

    @property
    def accepting(self) -> bool:
        """Would a request sent now be served here? Breaker, configuration and pool, as /readyz says."""
        return self.breaker.accepting and self.config_error is None and not self.pool_full


def build_upstream(name: str, cfg: BackendConfig, retry: frozenset[int]) -> Upstream:
    if cfg.transport == "litellm":
        return LiteLLMUpstream(resolve_adapter(name, cfg), cfg.timeouts, retry)
    upstreams = [HttpUpstream(resolve_adapter(name, cfg, base), cfg.timeouts, cfg.max_connections, retry)
                 for base in cfg.api_bases()]
    return upstreams[0] if len(upstreams) == 1 else ReplicaSet(upstreams)


def build_backends(settings: Settings, metrics: Recorder) -> dict[str, Backend]:
    retry = frozenset(settings.fallback.retry_statuses)
    backends: dict[str, Backend] = {}
    for name, cfg in settings.backends.items():
        def changed(state: BreakerState, backend: str = name) -> None:
            metrics.breaker_changed(backend, state.value)

        # No request outlives connect + queue wait + total: a trial older than that was lost.
        trial_bound = cfg.timeouts.connect_s + cfg.max_queue_wait_s + cfg.timeouts.total_s
        breaker = CircuitBreaker(settings.breaker.failure_threshold, settings.breaker.reset_after_s,
                                 on_change=changed, trial_timeout_s=trial_bound)
        def queue(waiting: int, backend: str = name) -> None:
            metrics.admission_queue(backend, waiting)

        admission = Admission(name, cfg.max_concurrent, cfg.max_queue, cfg.max_queue_wait_s, on_queue=queue)
        pool = cfg.max_connections * len(cfg.api_bases()) if cfg.transport == "direct" else None
        backends[name] = Backend(name, build_upstream(name, cfg, retry), breaker, cfg.timeouts, admission,
                                 non_streaming=cfg.non_streaming, pool_limit=pool)
    return backends
