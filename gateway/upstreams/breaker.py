"""Per-upstream circuit breaker: stop sending to a backend that keeps failing, then probe it.

closed --N consecutive failures--> open --reset_after_s--> half-open (one probe request)
half-open --probe succeeds--> closed;  --probe fails--> open again

The probe (the trial) holds the only half-open slot, so it must end on every path: `enter()` hands
out a `Pass` and `end(pass)` frees the slot when the request ended without a verdict on the upstream
(it failed inside the gateway, or was cancelled). A trial never heard from within `trial_timeout_s`
is given up too, so no lost request can keep a breaker open until restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Pass:
    """Leave to send one request; `trial` when it is the half-open probe (then `seq` names it)."""

    trial: bool
    seq: int = 0


class CircuitBreaker:
    def __init__(self, failure_threshold: int, reset_after_s: float, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[BreakerState], None] | None = None,
                 trial_timeout_s: float | None = None) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.trial_timeout_s = trial_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._trial_seq = 0
        self._trial_started = 0.0

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return self._state

    def seconds_until_probe(self) -> float:
        """How long until an open breaker lets a probe through (0 when it is not open)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(self.reset_after_s - (self._clock() - self._opened_at), 0.0)

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def trial_in_flight(self) -> bool:
        """Is a half-open probe out now (and not yet past its bound)?"""
        if not self._probe_in_flight:
            return False
        if self.trial_timeout_s is not None and self._clock() - self._trial_started > self.trial_timeout_s:
            return False  # lost: the next request may probe
        return True

    @property
    def accepting(self) -> bool:
        """Would a request be let through now? What readiness reports."""
        state = self.state
        return state is BreakerState.CLOSED or (state is BreakerState.HALF_OPEN and not self.trial_in_flight)

    def enter(self) -> Pass | None:
        """A pass to send a request now, or None. In half-open, only one probe at a time; its pass must
        be given back with `end()` however the request ends."""
        state = self.state
        if state is BreakerState.CLOSED:
            return Pass(trial=False)
        if state is BreakerState.HALF_OPEN and not self.trial_in_flight:
            self._set(BreakerState.HALF_OPEN)
            self._probe_in_flight = True
            self._trial_seq += 1
            self._trial_started = self._clock()
            return Pass(trial=True, seq=self._trial_seq)
        return None

    def allow(self) -> bool:
        """May a request go to this upstream now? (A probe taken this way ends with a verdict.)"""
        return self.enter() is not None

    def end(self, granted: Pass) -> None:
        """The request is over: if it was the probe and gave no verdict, free the probe slot."""
        if granted.trial and self._probe_in_flight and granted.seq == self._trial_seq:
            self._probe_in_flight = False

    def record_success(self) -> None:
        self._failures = 0
        self._probe_in_flight = False
        self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_in_flight = False
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN)
