"""`qroute report`: spend, savings against all-cloud, route shares and latency per route, as a
table on stdout and a PNG chart.

Two sources: Prometheus' HTTP API over a time window (`--prometheus URL --since 1h`), or one scrape
of the gateway's /metrics (`--metrics URL`: cumulative since the gateway started). Gathering the
data, printing the table and drawing the chart are separate steps, so the demo can call
`write_report` with samples it has already scraped. Flags are contracts.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gateway import scrape
from gateway.scrape import PrometheusAPI, PrometheusError, Sample
from router.routes import ROUTES

DURATION = "gen_ai_client_operation_duration_seconds"
TTFT = "gen_ai_server_time_to_first_token_seconds"
COUNTERS = {"cost": "qroute_cost_cny_total", "cloud_equivalent": "qroute_cloud_equivalent_cost_cny_total",
            "requests": "qroute_requests_total"}
NOT_ROUTED = "none"  # the route label of requests rejected before routing
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"^(?:\d+[smhdw])+$")


@dataclass(frozen=True)
class RouteLatency:
    """Seconds; None where the route has no observations (TTFT exists only for streamed requests)."""

    p50_s: float | None = None
    p95_s: float | None = None
    ttft_p50_s: float | None = None
    ttft_p95_s: float | None = None


@dataclass
class ReportData:
    source: str  # where the numbers came from
    window: str  # "last 1h" or "since the gateway started"
    cumulative: bool  # True: one scrape, counts since the gateway started
    end: float  # unix time the numbers are for
    start: float | None = None  # None when cumulative
    cost_by_route: dict[str, float] = field(default_factory=dict)
    cloud_equivalent_by_route: dict[str, float] = field(default_factory=dict)
    requests_by_route: dict[str, float] = field(default_factory=dict)
    latency: dict[str, RouteLatency] = field(default_factory=dict)
    # Over time (Prometheus only): name -> (unix time, value) points.
    spend_per_hour: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    requests_per_minute: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def cost_cny(self) -> float:
        return sum(self.cost_by_route.values())

    @property
    def cloud_equivalent_cny(self) -> float:
        return sum(self.cloud_equivalent_by_route.values())

    @property
    def saved_cny(self) -> float:
        return self.cloud_equivalent_cny - self.cost_cny

    @property
    def routed_requests(self) -> float:
        return sum(v for route, v in self.requests_by_route.items() if route != NOT_ROUTED)

    def routes(self) -> list[str]:
        """Routes with anything to show, in the routes' order, then any other label values."""
        seen = set(self.cost_by_route) | set(self.requests_by_route) | set(self.latency)
        seen.discard(NOT_ROUTED)
        return [r for r in ROUTES if r in seen] + sorted(seen - set(ROUTES))

    def share(self, route: str) -> float | None:
        """The route's share of routed requests (those rejected before routing have no route)."""
        total = self.routed_requests
        return self.requests_by_route.get(route, 0.0) / total if total > 0 else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(cost_cny=self.cost_cny, cloud_equivalent_cny=self.cloud_equivalent_cny, saved_cny=self.saved_cny,
                   shares={r: self.share(r) for r in self.routes()})
        return out


# --- gathering --------------------------------------------------------------------------------
def parse_duration(text: str) -> float:
    """Prometheus' duration syntax (1h, 30m, 1h30m, 2d): seconds."""
    if not _DURATION_RE.match(text):
        raise ValueError(f"--since {text!r}: expected a duration such as 30m, 1h, 1h30m or 7d")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", text))
    if seconds <= 0:
        raise ValueError(f"--since {text!r} must be longer than 0s")
    return float(seconds)


def report_from_samples(samples: list[Sample], source: str = "/metrics", now: float | None = None) -> ReportData:
    """One scrape: the counters as they stand, quantiles estimated from the buckets."""
    spent = scrape.spend(samples)
    latency: dict[str, RouteLatency] = {}
    quantiles = {(name, q): scrape.quantiles_by(samples, name, q) for name in (DURATION, TTFT) for q in (0.5, 0.95)}
    for route in {r for values in quantiles.values() for r in values}:
        latency[route] = RouteLatency(quantiles[DURATION, 0.5].get(route), quantiles[DURATION, 0.95].get(route),
                                      quantiles[TTFT, 0.5].get(route), quantiles[TTFT, 0.95].get(route))
    return ReportData(
        source=source, window="since the gateway started", cumulative=True, end=now or time.time(),
        cost_by_route=spent.by_route, cloud_equivalent_by_route=spent.cloud_equivalent_by_route,
        requests_by_route=spent.requests_by_route, latency=latency,
        notes=["cumulative since the gateway started (one scrape of /metrics): --since cannot apply",
               "quantiles estimated from the histogram buckets by linear interpolation, as Prometheus' "
               "histogram_quantile does"])


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def report_from_prometheus(api: PrometheusAPI, since_s: float, since_label: str,
                           now: float | None = None) -> ReportData:
    """`increase` over the window for the counters, `histogram_quantile` for latency, and rates
    over the window for the chart."""
    end = now or time.time()
    window = f"{since_s:.0f}s"

    def by_route(expr: str) -> dict[str, float]:
        return {labels.get("route", NOT_ROUTED): value for labels, value in api.query(expr, at=end)}

    totals = {key: by_route(f"sum by (route) (increase({metric}[{window}]))") for key, metric in COUNTERS.items()}
    quantiles: dict[tuple[str, float], dict[str, float]] = {}
    for name in (DURATION, TTFT):
        for q in (0.5, 0.95):
            quantiles[name, q] = by_route(
                f"histogram_quantile({q}, sum by (le, route) (increase({name}_bucket[{window}])))")
    routes = {r for values in quantiles.values() for r in values}
    latency = {r: RouteLatency(*(_finite(quantiles[k].get(r, math.nan)) for k in
                                 ((DURATION, 0.5), (DURATION, 0.95), (TTFT, 0.5), (TTFT, 0.95))))
               for r in routes}
    # The chart: about 60 points over the window; a rate needs a few scrapes, so never under a minute.
    step = max(since_s / 60, 1.0)
    rate_window = f"{max(step, 60.0):.0f}s"
    start = end - since_s
    spend_per_hour: dict[str, list[tuple[float, float]]] = {}
    for label, metric in (("spend", COUNTERS["cost"]), ("all-cloud", COUNTERS["cloud_equivalent"])):
        for _, points in api.query_range(f"sum(rate({metric}[{rate_window}])) * 3600", start, end, step):
            spend_per_hour[label] = points
    per_route = {labels.get("route", NOT_ROUTED): points for labels, points in api.query_range(
        f"sum by (route) (rate({COUNTERS['requests']}[{rate_window}])) * 60", start, end, step)}
    order = [r for r in ROUTES if r in per_route] + sorted(set(per_route) - set(ROUTES))
    requests_per_minute = {route: per_route[route] for route in order}
    return ReportData(
        source=api.base, window=f"last {since_label}", cumulative=False, end=end, start=start,
        cost_by_route=totals["cost"], cloud_equivalent_by_route=totals["cloud_equivalent"],
        requests_by_route=totals["requests"], latency=latency, spend_per_hour=spend_per_hour,
        requests_per_minute=requests_per_minute,
        notes=[f"increase() over the last {since_label}: Prometheus extrapolates to the window's edges, so counts "
               "may be fractional", "quantiles from histogram_quantile over the window's bucket increases"])


# --- the table ----------------------------------------------------------------------------------
def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _period(data: ReportData) -> str:
    if data.start is None:
        return f"{data.window}, as of {_when(data.end)}"
    return f"{data.window}: {_when(data.start)} to {_when(data.end)}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def format_table(data: ReportData) -> str:
    lines = [f"qroute report, {_period(data)}", f"source: {data.source}", ""]
    header = (f"{'route':<13}{'requests':>10}{'share':>8}{'spend CNY':>13}{'all-cloud CNY':>15}{'saved CNY':>13}"
              f"{'p50 s':>8}{'p95 s':>8}{'ttft p50 s':>12}{'ttft p95 s':>12}")
    lines += [header, "-" * len(header)]
    for route in data.routes():
        share = data.share(route)
        lat = data.latency.get(route, RouteLatency())
        cost = data.cost_by_route.get(route, 0.0)
        equivalent = data.cloud_equivalent_by_route.get(route, 0.0)
        lines.append(f"{route:<13}{_count(data.requests_by_route.get(route, 0.0)):>10}"
                     f"{'-' if share is None else f'{share:.1%}':>8}{cost:>13.6f}{equivalent:>15.6f}"
                     f"{equivalent - cost:>13.6f}{_s(lat.p50_s):>8}{_s(lat.p95_s):>8}{_s(lat.ttft_p50_s):>12}"
                     f"{_s(lat.ttft_p95_s):>12}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<13}{_count(data.routed_requests):>10}{'':>8}{data.cost_cny:>13.6f}"
                 f"{data.cloud_equivalent_cny:>15.6f}{data.saved_cny:>13.6f}")
    rejected = data.requests_by_route.get(NOT_ROUTED, 0.0)
    if rejected:
        lines.append(f"{_count(rejected)} request(s) rejected before routing (route 'none') are not in the shares")
    saved = f" ({data.saved_cny / data.cloud_equivalent_cny:.1%})" if data.cloud_equivalent_cny > 0 else ""
    lines += ["", f"spent {data.cost_cny:.6f} CNY; all-cloud would have cost {data.cloud_equivalent_cny:.6f} CNY; "
                  f"saved {data.saved_cny:.6f} CNY{saved}"]
    lines += [f"note: {n}" for n in data.notes]
    return "\n".join(lines)


# --- the chart ----------------------------------------------------------------------------------
def write_chart(data: ReportData, out: str | Path) -> None:
    """A PNG: spend vs all-cloud, route shares, latency and TTFT quantiles; over time when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    over_time = bool(data.spend_per_hour or data.requests_per_minute)
    fig, axes = plt.subplots(3 if over_time else 2, 2, figsize=(13, 13 if over_time else 9), squeeze=False)
    fig.suptitle(f"qroute report, {_period(data)}\n{data.source}", fontsize=13, fontweight="bold")
    routes = data.routes() or list(ROUTES)
    x = np.arange(len(routes) + 1)
    names = [*routes, "total"]

    ax = axes[0][0]
    spend = [data.cost_by_route.get(r, 0.0) for r in routes] + [data.cost_cny]
    equivalent = [data.cloud_equivalent_by_route.get(r, 0.0) for r in routes] + [data.cloud_equivalent_cny]
    ax.bar(x - 0.2, spend, 0.4, label="spend")
    ax.bar(x + 0.2, equivalent, 0.4, label="all-cloud equivalent")
    ax.set_xticks(x, names)
    ax.set_ylabel("CNY")
    ax.set_title(f"Spend vs all-cloud: saved {data.saved_cny:.4g} CNY")
    ax.legend()

    ax = axes[0][1]
    shares = [100 * (data.share(r) or 0.0) for r in routes]
    bars = ax.bar(routes, shares, color="tab:green")
    ax.bar_label(bars, labels=[f"{s:.1f}%" for s in shares])
    ax.set_ylim(0, 110)
    ax.set_ylabel("% of routed requests")
    ax.set_title(f"Route shares ({_count(data.routed_requests)} requests)")

    for ax, title, low, high in ((axes[1][0], "Latency per request", "p50_s", "p95_s"),
                                 (axes[1][1], "Time to first token (streamed)", "ttft_p50_s", "ttft_p95_s")):
        lat = [data.latency.get(r, RouteLatency()) for r in routes]
        xs = np.arange(len(routes))
        for offset, attr, label in ((-0.2, low, "p50"), (0.2, high, "p95")):
            values = [getattr(v, attr) for v in lat]
            bars = ax.bar(xs + offset, [v or 0.0 for v in values], 0.4, label=label)
            ax.bar_label(bars, labels=[_s(v) for v in values], fontsize=8)
        ax.set_xticks(xs, routes)
        ax.set_ylabel("seconds")
        ax.set_title(f"{title}, p50 / p95")
        ax.legend()

    if over_time:
        for ax, title, unit, series in ((axes[2][0], "Spend rate", "CNY per hour", data.spend_per_hour),
                                        (axes[2][1], "Requests by route", "per minute", data.requests_per_minute)):
            for label, points in series.items():
                ax.plot([datetime.fromtimestamp(t, UTC) for t, _ in points], [v for _, v in points], label=label)
            ax.set_title(title)
            ax.set_xlabel("UTC")
            ax.set_ylabel(unit)
            ax.tick_params(axis="x", labelrotation=30)
            if series:
                ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_report(source: ReportData | list[Sample] | str, out_path: str | Path, key: str | None = None) -> ReportData:
    """What the demo calls: a ReportData, the samples of a scrape, or a /metrics URL -> the PNG."""
    if isinstance(source, str):
        data = report_from_samples(scrape.fetch(source, key), source)
    elif isinstance(source, list):
        data = report_from_samples(source)
    else:
        data = source
    write_chart(data, out_path)
    return data


# --- the command --------------------------------------------------------------------------------
def gather(args: argparse.Namespace) -> ReportData:
    if args.prometheus:
        since = args.since or "1h"
        return report_from_prometheus(PrometheusAPI(args.prometheus, args.key), parse_duration(since), since)
    data = report_from_samples(scrape.fetch(args.metrics, args.key), args.metrics)
    if args.since:
        data.notes.insert(0, f"--since {args.since} ignored: /metrics holds counts since the gateway started")
    return data


def cmd_report(args: argparse.Namespace) -> int:
    try:
        data = gather(args)
        write_chart(data, args.out)
    except (httpx.HTTPError, PrometheusError, OSError, ValueError) as exc:
        print(f"qroute report: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(data.to_json(), indent=2) if args.json else format_table(data))
    print(f"chart written to {args.out}", file=sys.stderr)
    return 0


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="spend, savings, route shares and latency: a table and a PNG chart")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL", help="Prometheus base URL (its HTTP API)")
    source.add_argument("--metrics", metavar="URL", help="the gateway's /metrics URL (cumulative since its start)")
    report.add_argument("--key", default=None, help="bearer key, for a /metrics that wants one (metrics.require_key)")
    report.add_argument("--since", default=None, help="time window for --prometheus (default 1h; 30m, 1h30m, 7d)")
    report.add_argument("--out", default="report.png", help="PNG chart path (default report.png)")
    report.add_argument("--json", action="store_true", help="the report's data as JSON instead of the table")
    report.set_defaults(func=cmd_report)
