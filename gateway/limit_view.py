"""When a replica may admit a request without waiting for Redis: its view of a key's usage.

Every answer Redis gives about a key (an admission, a settlement) carries the key's usage across all
replicas at that moment. While that view is fresh (VIEW_FRESH_S) and the key is far from every limit
it has (room for MIN_ROOM more requests, of the largest size seen here, under `below` of each),
the replica admits the request at once and records it in Redis with the next write-behind flush. Near
a limit, or without a fresh view, the request waits for Redis's own atomic verdict, so the request that
would cross a limit is refused whichever replica takes it; a limit with room for fewer than 2 x MIN_ROOM
requests is always Redis's to decide. Two replicas acting on views as stale as they come still stay
within the limit between them (each stops at `below` of it); more can overrun it only if the others use
the rest within VIEW_FRESH_S. Redis counts every request all the same, and an admission it would have
refused is counted (qroute_limit_view_overshoots_total).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import Limit

VIEW_FRESH_S = 1.0  # a view older than this is not acted on
MIN_ROOM = 10  # requests (of the largest size seen) that must still fit under each limit


@dataclass(frozen=True)
class Usage:
    """A key's usage across every replica, as Redis counted it."""

    rpm: int  # requests in the last minute
    tpm: int  # tokens in the last minute
    concurrent: int  # requests in flight
    spent: float  # CNY today

    @classmethod
    def of(cls, reply: list[object]) -> Usage:
        """From a script's reply tail: rpm, tpm, concurrent, spent (a string: Redis truncates floats)."""
        rpm, tpm, concurrent, spent = reply
        return cls(int(str(rpm)), int(str(tpm)), int(str(concurrent)), float(str(spent)))


class KeyView:
    """One key's usage as this replica last heard it, and what it has admitted on its own since."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.at = 0.0  # when Redis answered (monotonic seconds)
        self.admitted_since = 0  # admitted here on the view since it was taken
        self.largest_tokens: int | None = None  # the largest request settled here (tokens, CNY)
        self.largest_cost: float | None = None

    def heard(self, usage: Usage, now: float) -> None:
        self.usage, self.at, self.admitted_since = usage, now, 0

    def settled(self, tokens: int, cost: float) -> None:
        self.largest_tokens = max(self.largest_tokens or 0, tokens)
        self.largest_cost = max(self.largest_cost or 0.0, cost)

    def far_from(self, limit: Limit, now: float, below: float) -> bool:
        """May a request be admitted here without asking Redis?"""
        usage = self.usage
        if usage is None or below <= 0 or now - self.at > VIEW_FRESH_S:
            return False
        n = self.admitted_since
        if limit.rpm is not None and not _room(usage.rpm + n, limit.rpm, below, 1):
            return False
        if limit.concurrent is not None and not _room(usage.concurrent + n, limit.concurrent, below, 1):
            return False
        if limit.tpm is not None and (self.largest_tokens is None or not _room(
                usage.tpm + n * self.largest_tokens, limit.tpm, below, self.largest_tokens)):
            return False
        return limit.budget_cny_per_day is None or (self.largest_cost is not None and _room(
            usage.spent + n * self.largest_cost, limit.budget_cny_per_day, below, self.largest_cost))


def _room(used: float, limit: float, below: float, per_request: float) -> bool:
    """Room for MIN_ROOM more requests before the share of the limit this replica may use on its own."""
    return used + MIN_ROOM * per_request <= below * limit
