"""Reading qroute's metrics back: spend, savings, route shares and latency quantiles, from one
scrape of /metrics or from Prometheus' HTTP API.

Used by the demo and `qroute report`: the numbers come from the same counters and histograms that
Prometheus scrapes, never from separate arithmetic. Quantiles from a scrape follow Prometheus'
`histogram_quantile`, so both sources estimate them the same way.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Spend:
    cost_cny: float = 0.0
    cloud_equivalent_cny: float = 0.0
    by_route: dict[str, float] = field(default_factory=dict)
    requests_by_route: dict[str, float] = field(default_factory=dict)
    cloud_equivalent_by_route: dict[str, float] = field(default_factory=dict)

    @property
    def saved_cny(self) -> float:
        return self.cloud_equivalent_cny - self.cost_cny


def parse(text: str) -> list[Sample]:
    return [Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text) for s in family.samples]


def fetch(url: str, key: str | None = None, timeout_s: float = 5.0) -> list[Sample]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    resp = httpx.get(url, headers=headers, timeout=timeout_s)
    resp.raise_for_status()
    return parse(resp.text)


def spend(samples: list[Sample]) -> Spend:
    out = Spend()
    by_route: dict[str, float] = defaultdict(float)
    requests: dict[str, float] = defaultdict(float)
    equivalent: dict[str, float] = defaultdict(float)
    for s in samples:
        if s.name == "qroute_cost_cny_total":
            out.cost_cny += s.value
            by_route[s.labels.get("route", "none")] += s.value
        elif s.name == "qroute_cloud_equivalent_cost_cny_total":
            out.cloud_equivalent_cny += s.value
            equivalent[s.labels.get("route", "none")] += s.value
        elif s.name == "qroute_requests_total":
            requests[s.labels.get("route", "none")] += s.value
    out.by_route = dict(by_route)
    out.requests_by_route = dict(requests)
    out.cloud_equivalent_by_route = dict(equivalent)
    return out


# --- histograms ---------------------------------------------------------------------------------
Buckets = list[tuple[float, float]]  # (upper bound `le`, cumulative count), +Inf included


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile on cumulative buckets: linear interpolation inside the bucket
    the rank falls in (from 0 for the first), the highest finite bound when it falls in +Inf.
    None where Prometheus answers NaN: no observations, no +Inf bucket, fewer than two buckets."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets)
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return None
    counts: list[float] = []
    for _, count in ordered:  # counts scraped at slightly different times may dip; Prometheus evens them out
        counts.append(max(count, counts[-1]) if counts else count)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    index = next(i for i, c in enumerate(counts) if c >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]
    upper = ordered[index][0]
    if index == 0 and upper <= 0:
        return upper
    lower = ordered[index - 1][0] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    in_bucket = counts[index] - below
    if in_bucket <= 0:
        return upper
    return lower + (upper - lower) * (rank - below) / in_bucket


def buckets_by(samples: list[Sample], metric: str, label: str = "route") -> dict[str, Buckets]:
    """`<metric>_bucket` summed by `le` and one label, as `sum by (le, route)` does."""
    summed: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for s in samples:
        if s.name == f"{metric}_bucket" and "le" in s.labels:
            summed[s.labels.get(label, "none")][float(s.labels["le"])] += s.value
    return {key: sorted(bounds.items()) for key, bounds in summed.items()}


def quantiles_by(samples: list[Sample], metric: str, q: float, label: str = "route") -> dict[str, float | None]:
    return {key: histogram_quantile(q, buckets) for key, buckets in buckets_by(samples, metric, label).items()}


# --- Prometheus' HTTP API -------------------------------------------------------------------------
class PrometheusError(Exception):
    """Prometheus answered, but not with data: a bad query, or an error status."""


Labels = dict[str, str]


class PrometheusAPI:
    """The two read endpoints a report needs: instant queries and range queries."""

    def __init__(self, base: str, key: str | None = None, timeout_s: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self._headers = {"authorization": f"Bearer {key}"} if key else {}
        self._timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> Any:
        resp = httpx.get(f"{self.base}{path}", params=params, headers=self._headers, timeout=self._timeout_s)
        try:
            body = resp.json()
        except ValueError:
            resp.raise_for_status()
            raise PrometheusError(f"{self.base}{path}: not a Prometheus API answer") from None
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType', 'error')}: {body.get('error', resp.text[:200])}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[Labels, float]]:
        """An instant vector: (labels, value) per series; NaN stays NaN (e.g. a quantile of nothing)."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
        data = self._get("/api/v1/query", params)
        if data.get("resultType") != "vector":
            raise PrometheusError(f"expected a vector from {expr!r}, got {data.get('resultType')}")
        return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    def query_range(self, expr: str, start: float, end: float, step_s: float
                    ) -> list[tuple[Labels, list[tuple[float, float]]]]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step_s:g}s"})
        return [(dict(r["metric"]), [(float(t), float(v)) for t, v in r["values"]]) for r in data["result"]]
