"""Score plus thresholds gives a route: below t1 local, up to t2 local-think, above t2 cloud."""

from __future__ import annotations

from dataclasses import dataclass

from router.routes import CLOUD, LOCAL, LOCAL_THINK, Route


@dataclass(frozen=True)
class Thresholds:
    t1: float
    t2: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.t1 <= self.t2 <= 1.0:
            raise ValueError(f"need 0 <= t1 <= t2 <= 1, got t1={self.t1}, t2={self.t2}")


def decide(score: float, thresholds: Thresholds) -> Route:
    """With t1 == t2 the middle tier is empty: a single threshold between local and cloud."""
    if score < thresholds.t1:
        return LOCAL
    if score <= thresholds.t2 and thresholds.t1 < thresholds.t2:
        return LOCAL_THINK
    return CLOUD
