"""The backends a gateway calls, built once from the settings: for each, its upstream (one base URL
or a set of replicas), circuit breaker, admission queue and load meter."""

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

        breaker = CircuitBreaker(settings.breaker.failure_threshold, settings.breaker.reset_after_s,
                                 on_change=changed)
        def queue(waiting: int, backend: str = name) -> None:
            metrics.admission_queue(backend, waiting)

        admission = Admission(name, cfg.max_concurrent, cfg.max_queue, cfg.max_queue_wait_s, on_queue=queue)
        backends[name] = Backend(name, build_upstream(name, cfg, retry), breaker, cfg.timeouts, admission)
    return backends
