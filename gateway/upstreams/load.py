"""How busy a backend is: requests in flight now, and the time-weighted mean concurrency over any
request's lifetime (for its share of a self-hosted GPU). Plain numbers on the event loop's thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Occupancy:
    started: float
    area: float  # the running integral of in-flight requests over time when the request started


class BackendLoad:
    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.in_flight = 0
        self._area = 0.0  # integral of in_flight over time, up to _last
        self._last = clock()

    def _advance(self) -> float:
        now = self._clock()
        self._area += self.in_flight * (now - self._last)
        self._last = now
        return now

    def enter(self) -> Occupancy:
        now = self._advance()
        self.in_flight += 1
        return Occupancy(now, self._area)

    def leave(self, occupancy: Occupancy) -> tuple[float, float]:
        """(seconds this request was in flight, mean requests in flight meanwhile, itself included)."""
        now = self._advance()
        self.in_flight = max(self.in_flight - 1, 0)
        busy = now - occupancy.started
        mean = (self._area - occupancy.area) / busy if busy > 0 else 1.0
        return busy, max(mean, 1.0)
