"""Admission per backend: at most `max_concurrent` requests at once; the rest wait in a bounded queue,
highest priority first (then first come), each at most `max_queue_wait_s`. Beyond that the request
is refused with 503 and Retry-After, never left to pile up on a saturated GPU.

The expected wait (requests ahead / slots, times a moving average of how long a request holds a slot)
is also what spill-over reads to decide that the backend is saturated.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

from gateway.errors import UpstreamError

EWMA = 0.2  # weight of the newest slot time in the moving average


class BackendOverloaded(UpstreamError):
    """The backend's admission queue is full, or the wait ran out: 503 with Retry-After."""

    status = 503
    code = "backend_overloaded"
    outcome = "overloaded"
    waited_s = 0.0  # how long it waited in the queue before it was refused (0: refused at once)


class Admission:
    def __init__(self, backend: str, max_concurrent: int | None, max_queue: int, max_wait_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_queue: Callable[[int], None] | None = None) -> None:
        self.backend = backend
        self._on_queue = on_queue or (lambda waiting: None)  # the queue's length changed (metrics)
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_wait_s = max_wait_s
        self._clock = clock
        self.running = 0
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.slot_s = 1.0  # moving average of a slot's holding time; a guess until requests finish

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._queue if not f.done())

    def expected_wait(self) -> float:
        """How long a request arriving now would wait for a slot (0 when one is free)."""
        if self.max_concurrent is None or (self.running < self.max_concurrent and not self.waiting):
            return 0.0
        return (self.waiting + 1) * self.slot_s / self.max_concurrent

    def saturated(self) -> bool:
        return self.expected_wait() > self.max_wait_s or (self.max_concurrent is not None
                                                          and self.waiting >= self.max_queue > 0)

    def try_acquire(self, headroom: int = 0) -> bool:
        """A slot only if one is free now, nobody waits, and `headroom` more stay free after it: so
        background work never queues, nor takes the slot a client request is about to need."""
        if self.max_concurrent is None or (self.running + headroom < self.max_concurrent and not self.waiting):
            self.running += 1
            return True
        return False

    async def acquire(self, priority: int = 0) -> float:
        """A slot, now (0.0) or after waiting (the seconds waited); BackendOverloaded when there is no
        room or no time."""
        if self.max_concurrent is None or (self.running < self.max_concurrent and not self.waiting):
            self.running += 1
            return 0.0
        queued = self._clock()
        if self.waiting >= self.max_queue:
            raise self._refuse(f"{self.waiting} requests already waiting")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (-priority, next(self._order), future))
        self._on_queue(self.waiting)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.max_wait_s)
        except TimeoutError:
            if future.done() and not future.cancelled():
                return self._clock() - queued  # granted at the last moment: the slot is ours
            future.cancel()
            self._on_queue(self.waiting)
            raise self._refuse(f"no slot within {self.max_wait_s:g} s", self._clock() - queued) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(0.0)  # granted, then the request was cancelled: give the slot on
            else:
                future.cancel()
                self._on_queue(self.waiting)
            raise
        return self._clock() - queued

    def release(self, held_s: float) -> None:
        """A slot is free again: hand it to the highest-priority waiter, if any."""
        if held_s > 0:
            self.slot_s = (1 - EWMA) * self.slot_s + EWMA * held_s
        self.running = max(self.running - 1, 0)
        while self._queue:
            _, _, future = heapq.heappop(self._queue)
            if not future.done():
                self.running += 1
                future.set_result(None)
                self._on_queue(self.waiting)
                return

    def _refuse(self, why: str, waited_s: float = 0.0) -> BackendOverloaded:
        refused = BackendOverloaded(f"{self.backend} is at capacity ({self.max_concurrent} at once; {why})",
                                    backend=self.backend, retryable=False,
                                    retry_after=max(self.expected_wait(), 1.0))
        refused.waited_s = waited_s
        return refused

    def describe(self) -> dict[str, float | int | None]:
        return {"max_concurrent": self.max_concurrent, "running": self.running, "waiting": self.waiting,
                "expected_wait_s": round(self.expected_wait(), 3)}
