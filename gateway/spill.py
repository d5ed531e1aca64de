"""Spill-over: while a local backend is saturated, requests `auto` would send to it go to the cloud
route instead (reason `auto:spill`); pinned routes never move.

Saturated means any of: vLLM's own queue (`vllm:num_requests_waiting`, read from its /metrics every
`poll_s`) above `max_waiting`; the gateway's admission queue wait above `max_queue_wait_s`; or the
backend answered 429 or 503. Spilling starts at once and stops only after every signal has been
quiet for `cooldown_s`, and vLLM's queue must fall to `resume_waiting`: no flapping. A stale or
unreachable /metrics is no signal at all, never an error. Ops can turn it off or cap it: no
spilling while the cloud's share of `auto` traffic is above `max_cloud_share`, or while spilled
requests have spent more than `max_spend_cny_per_hour` in the last hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.admission import Admission
from gateway.settings import SpillConfig
from gateway.tasks import stop

log = logging.getLogger("qroute.spill")
STALE_AFTER = 3  # polls without an answer before vLLM's queue is unknown


@dataclass(frozen=True)
class VllmLoad:
    waiting: float
    running: float
    kv_cache_usage: float | None


def parse_vllm_metrics(text: str) -> VllmLoad:
    """vLLM's queue from its Prometheus text, summed over models and engines (and replicas)."""
    sums = {"vllm:num_requests_waiting": 0.0, "vllm:num_requests_running": 0.0}
    kv: list[float] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in sums:
                sums[sample.name] += sample.value
            elif sample.name in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"):
                kv.append(sample.value)
    return VllmLoad(sums["vllm:num_requests_waiting"], sums["vllm:num_requests_running"],
                    max(kv) if kv else None)


class VllmQueueReader:
    """Reads each replica's /metrics in the background; `load` is None while unknown or stale."""

    def __init__(self, backend: str, urls: list[str], poll_s: float) -> None:
        self.backend = backend
        self.urls = urls
        self.poll_s = poll_s
        self.load: VllmLoad | None = None
        self._misses = 0
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.urls:
            self._session = aiohttp.ClientSession()
            self._task = asyncio.create_task(self._poll())

    async def close(self) -> None:
        await stop(self._task)
        if self._session is not None:
            await self._session.close()

    async def _read(self, url: str) -> VllmLoad:
        assert self._session is not None
        async with asyncio.timeout(min(self.poll_s, 1.0)), self._session.get(url) as resp:
            if resp.status >= 400:
                raise ValueError(f"{url} answered {resp.status}")
            return parse_vllm_metrics(await resp.text())

    async def read_once(self) -> None:
        try:
            loads = await asyncio.gather(*(self._read(url) for url in self.urls))
        except Exception as exc:  # unreachable, slow, malformed: the reading is simply unknown
            self._misses += 1
            if self._misses == STALE_AFTER:
                log.warning("vLLM metrics of %s unreadable (%s: %s): spill-over goes by the other signals",
                            self.backend, type(exc).__name__, exc)
            if self._misses >= STALE_AFTER:
                self.load = None
            return
        if self._misses >= STALE_AFTER:
            log.warning("vLLM metrics of %s readable again", self.backend)
        self._misses = 0
        kv = [x.kv_cache_usage for x in loads if x.kv_cache_usage is not None]
        self.load = VllmLoad(sum(x.waiting for x in loads), sum(x.running for x in loads), max(kv) if kv else None)

    async def _poll(self) -> None:
        while True:
            await self.read_once()
            await asyncio.sleep(self.poll_s)


@dataclass
class SpillState:
    backend: str
    admission: Admission
    reader: VllmQueueReader
    active: bool = False
    quiet_since: float | None = None
    refused_at: float = float("-inf")  # when the backend last answered 429/503
    vllm_over: bool = False


@dataclass
class Caps:
    """The last window of `auto` decisions (cloud or not) and of spilled requests' spend, with their
    sums kept as they change (read on every spill-over decision). Old entries leave on every record,
    not only when the caps are read: a local that never saturates must not keep every decision."""

    window_s: float
    decisions: deque[tuple[float, bool]] = field(default_factory=deque)
    spend: deque[tuple[float, float]] = field(default_factory=deque)
    cloud: int = 0  # cloud decisions in `decisions`
    spent: float = 0.0  # CNY in `spend`

    def forget(self, now: float) -> None:
        while self.decisions and self.decisions[0][0] < now - self.window_s:
            self.cloud -= self.decisions.popleft()[1]
        while self.spend and self.spend[0][0] < now - 3600:
            self.spent -= self.spend.popleft()[1]


class SpillController:
    def __init__(self, config: SpillConfig, states: dict[str, SpillState],
                 on_change: Callable[[str, bool], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.states = states
        self._on_change = on_change
        self._clock = clock
        self._caps = Caps(config.window_s)
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.config.enabled and self.states:
            for state in self.states.values():
                await state.reader.start()
            self._ticker = asyncio.create_task(self._tick())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for state in self.states.values():
            await state.reader.close()

    async def _tick(self) -> None:
        """Re-evaluate without traffic too: spilling ends (and its gauge and /readyz say so) once
        the signals are quiet, not only when the next request happens to ask."""
        while True:
            await asyncio.sleep(min(self.config.poll_s, self.config.cooldown_s or self.config.poll_s))
            for backend in self.states:
                self.saturated(backend)

    def refused(self, backend: str) -> None:
        """The backend answered 429 or 503: saturated, by its own word."""
        if backend in self.states:
            self.states[backend].refused_at = self._clock()

    def saturated(self, backend: str) -> bool:
        """Should `auto` traffic for this backend spill now? Updates the hysteresis."""
        state = self.states.get(backend)
        if state is None or not self.config.enabled:
            return False
        now = self._clock()
        load = state.reader.load
        if load is not None:
            if load.waiting > self.config.max_waiting:
                state.vllm_over = True
            elif load.waiting <= self.config.resume_waiting:
                state.vllm_over = False
        else:
            state.vllm_over = False  # unknown: no signal
        signal = state.vllm_over or state.admission.saturated() or now - state.refused_at < self.config.cooldown_s
        if signal:
            state.quiet_since = None
            self._set(state, True)
        elif state.active:
            state.quiet_since = state.quiet_since if state.quiet_since is not None else now
            if now - state.quiet_since >= self.config.cooldown_s:
                self._set(state, False)
        return state.active

    def allowed(self) -> bool:
        """The caps: may one more request spill to the cloud now?"""
        caps = self._caps
        caps.forget(self._clock())
        if self.config.max_cloud_share is not None:
            # the share this spill would make: the window's cloud decisions plus this one
            share = (caps.cloud + 1) / (len(caps.decisions) + 1)
            if share > self.config.max_cloud_share:
                return False
        return self.config.max_spend_cny_per_hour is None or caps.spent < self.config.max_spend_cny_per_hour

    def record_decision(self, to_cloud: bool) -> None:
        now = self._clock()
        self._caps.forget(now)
        self._caps.decisions.append((now, to_cloud))
        self._caps.cloud += to_cloud

    def record_spend(self, cny: float) -> None:
        now = self._clock()
        self._caps.forget(now)
        self._caps.spend.append((now, cny))
        self._caps.spent += cny

    def _set(self, state: SpillState, active: bool) -> None:
        if active == state.active:
            return
        state.active = active
        load = state.reader.load
        what = "saturated: auto traffic spills to the cloud" if active else "recovered: no more spill"
        log.warning("%s %s: vLLM waiting %s, admission waiting %d (expected wait %.1f s)", state.backend, what,
                    f"{load.waiting:g}" if load is not None else "unknown", state.admission.waiting,
                    state.admission.expected_wait())
        self._on_change(state.backend, active)

    def describe(self, backend: str) -> dict[str, object] | None:
        state = self.states.get(backend)
        if state is None:
            return None
        load = state.reader.load
        return {"spilling": state.active, "vllm_waiting": load.waiting if load else None,
                "vllm_running": load.running if load else None}
