"""qroute's Grafana dashboards, as code (grafana-foundation-sdk), written as JSON for provisioning.

    python deploy/grafana/build_dashboards.py          # (re)write deploy/grafana/dashboards/*.json
    python deploy/grafana/build_dashboards.py --check  # exit 1 if the JSON there differs

Change the dashboards here, never in Grafana's UI (the provisioning disallows UI saves), and commit the
regenerated JSON with this file: tests/test_observability_deploy.py checks they agree.

Every query reads metrics the gateway exports on GET /metrics (gateway/metrics.py) or vLLM's own
`vllm:` metrics, through the data source chosen by the `datasource` variable (by default the one
deploy/grafana/provisioning/datasources/prometheus.yaml provisions). Each replica counts on its own,
so every query sums over `instance`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The SDK warns, at import, that it prefers the v2 dashboard schema; Grafana loads v2 only behind
# feature flags, so these dashboards stay on the classic JSON model every Grafana provisions from files.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
    from grafana_foundation_sdk.builders import bargauge, heatmap, stat, statetimeline, timeseries
    from grafana_foundation_sdk.builders import common as cb
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders.prometheus import Dataquery
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models.dashboard import (
        DashboardCursorSync,
        DashboardLinkType,
        Threshold,
        ThresholdsMode,
        ValueMap,
        ValueMappingResult,
        VariableOption,
        VariableRefresh,
        VariableSort,
    )
    from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE_UID = "qroute-prometheus"  # provisioning/datasources/prometheus.yaml
DS = common.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Outcomes that are the service's fault (as in deploy/prometheus/rules/qroute-recording.yml).
ERROR_OUTCOMES = "upstream_error|upstream_timeout|upstream_unavailable|retrieval_error|stream_error|internal_error"
R = 'route=~"$route"'  # the route variable (multi, "All" = .*)


# --- small helpers ------------------------------------------------------------------------------
def query(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
          heatmap_format: bool = False) -> Dataquery:
    q = Dataquery().datasource(DS).expr(expr).ref_id(ref).legend_format(legend or "__auto")
    q = q.instant() if instant else q.range()
    if heatmap_format:
        q = q.format(PromQueryFormat.HEATMAP)
    return q


def quantiles(metric: str, by: str, selector: str, legend: str) -> list[Dataquery]:
    """p50/p95/p99 of a histogram, per `by`."""
    return [query(f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
                  f"{legend} p{int(q * 100)}", ref)
            for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))]


def legend_table() -> cb.VizLegendOptions:
    return (cb.VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM).calcs(["mean", "max", "lastNotNull"]))


def tooltip_all() -> cb.VizTooltipOptions:
    return cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def series(title: str, description: str, targets: list[Dataquery], unit: str, stack: bool = False,
           width: int = 12, height: int = 8, minimum: float | None = 0) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).datasource(DS).unit(unit)
             .span(width).height(height).legend(legend_table()).tooltip(tooltip_all()).fill_opacity(10)
             .targets(targets))
    if minimum is not None:
        panel = panel.min(minimum)
    if stack:
        panel = panel.stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(60)
    return panel


def single(title: str, description: str, targets: list[Dataquery], unit: str, width: int = 4,
           decimals: float | None = None, steps: list[Threshold] | None = None, height: int = 5) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).datasource(DS).unit(unit).span(width)
             .height(height)
             .graph_mode(common.BigValueGraphMode.NONE).color_mode(common.BigValueColorMode.VALUE)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .targets(targets))
    if decimals is not None:
        panel = panel.decimals(decimals)
    panel = panel.thresholds(db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
                             .steps(steps or [Threshold(value=None, color="blue")]))
    return panel


class Board:
    """A dashboard being built: panels get ids 1, 2, ... in the order they are added."""

    def __init__(self, uid: str, title: str, description: str, tags: list[str], time_from: str,
                 refresh: str) -> None:
        self.next_id = 1
        self.builder = (db.Dashboard(title).uid(uid).description(description).tags(tags).editable()
                        .time(time_from, "now").refresh(refresh).timezone("browser")
                        .tooltip(DashboardCursorSync.CROSSHAIR)
                        .link(db.DashboardLink("qroute dashboards").type(DashboardLinkType.DASHBOARDS)
                              .tags(["qroute"]).as_dropdown(True).include_vars(False).keep_time(True))
                        .with_variable(datasource_variable()))

    def variable(self, variable: Any) -> Board:
        self.builder = self.builder.with_variable(variable)
        return self

    def row(self, title: str) -> Board:
        self.builder = self.builder.with_row(db.Row(title).id(self._id()))
        return self

    def add(self, *panels: Any) -> Board:
        for panel in panels:
            self.builder = self.builder.with_panel(panel.id(self._id()))
        return self

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def json(self) -> str:
        return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(self.builder.build()) + "\n"


def datasource_variable() -> db.DatasourceVariable:
    return (db.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .current(VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID)))


def label_variable(name: str, label: str, metric: str) -> db.QueryVariable:
    """A multi-value variable over one label's values, "All" by default (matches with `=~`)."""
    return (db.QueryVariable(name).label(label).datasource(DS)
            .query(f"label_values({metric}, {name})").definition(f"label_values({metric}, {name})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(VariableOption(selected=True, text=["All"], value=["$__all"])))


# --- qroute: cost and routing -------------------------------------------------------------------
def cost_and_routing() -> Board:
    b = Board("qroute-cost-routing", "qroute: cost and routing",
              "Spend, savings against all-cloud, routing, latency and failures of the qroute gateway.",
              ["qroute", "llm", "cost"], "now-24h", "30s")
    b.variable(label_variable("route", "Route", "qroute_requests_total"))

    b.row("Spend and savings")
    spend_range = f"sum(increase(qroute_cost_cny_total{{{R}}}[$__range]))"
    equivalent_range = f"sum(increase(qroute_cloud_equivalent_cost_cny_total{{{R}}}[$__range]))"
    b.add(
        single("Spend (time range)", "CNY spent in the dashboard's time range on the selected routes: cloud "
               "tokens at their prices, the self-hosted GPU by its share of the time.",
               [query(spend_range, "spend", instant=True)], "currencyCNY", decimals=2),
        single("Saved against all-cloud (time range)", "What the same tokens would have cost at the cloud "
               "route's prices, less what they cost (qroute_cloud_equivalent_cost_cny_total - "
               "qroute_cost_cny_total).",
               [query(f"{equivalent_range} - {spend_range}", "saved", instant=True)], "currencyCNY", decimals=2,
               steps=[Threshold(value=None, color="red"), Threshold(value=0, color="green")]),
        single("Spend last 24 h / daily budget", "Rolling 24-hour spend (all routes) against "
               "targets.daily_spend_cny; the QrouteDailySpendOverBudget alert compares the same two.",
               [query("sum(increase(qroute_cost_cny_total[24h]))", "last 24 h", instant=True),
                query('max(qroute_target{target="daily_spend_cny"})', "budget", "B", instant=True)],
               "currencyCNY", width=6, decimals=2),
        single("Cloud share / target", "Share of routed requests the cloud route answered in the time range "
               "(fallbacks included), and targets.cloud_share.",
               [query('(sum(increase(qroute_requests_total{route="cloud"}[$__range])) or vector(0)) / '
                      'sum(increase(qroute_requests_total{route!="none"}[$__range]))', "cloud share",
                      instant=True),
                query('max(qroute_target{target="cloud_share"})', "target", "B", instant=True)],
               "percentunit", width=6, decimals=1),
        single("Self-hosted hardware cost", "What each self-hosted backend costs per second, busy or idle: "
               "GPU price written off over its years plus electricity (backends.*.hardware).",
               [query("max by (backend) (qroute_backend_hardware_cost_cny_per_second)", "{{backend}}",
                      instant=True)], "currencyCNY", decimals=6),
    )
    b.add(
        series("Spend per route (CNY per hour)", "Spend rate per route and in total, in CNY per hour.",
               [query(f"sum by (route) (rate(qroute_cost_cny_total{{{R}}}[$__rate_interval])) * 3600", "{{route}}"),
                query(f"sum(rate(qroute_cost_cny_total{{{R}}}[$__rate_interval])) * 3600", "total", "B")],
               "currencyCNY"),
        series("Savings against all-cloud (CNY per hour)", "Cloud-equivalent cost less actual cost, per route "
               "and in total, in CNY per hour. Local answers save their tokens' cloud price less the GPU's "
               "share; cloud answers save nothing.",
               [query(f"(sum by (route) (rate(qroute_cloud_equivalent_cost_cny_total{{{R}}}[$__rate_interval])) - "
                      f"sum by (route) (rate(qroute_cost_cny_total{{{R}}}[$__rate_interval]))) * 3600", "{{route}}"),
                query(f"(sum(rate(qroute_cloud_equivalent_cost_cny_total{{{R}}}[$__rate_interval])) - "
                      f"sum(rate(qroute_cost_cny_total{{{R}}}[$__rate_interval]))) * 3600", "total", "B")],
               "currencyCNY", minimum=None),
    )

    b.row("Traffic and routing")
    b.add(
        series("Share of traffic per route", "Each route's share of the routed requests (requests rejected "
               "before routing left out).",
               [query(f'sum by (route) (rate(qroute_requests_total{{{R}, route!="none"}}[$__rate_interval])) '
                      '/ ignoring (route) group_left () '
                      'sum(rate(qroute_requests_total{route!="none"}[$__rate_interval]))', "{{route}}")],
               "percentunit", stack=True),
        series("Requests per second by route and outcome", "All chat requests, by the route that answered "
               "(or was tried last) and outcome.",
               [query(f"sum by (route, outcome) (rate(qroute_requests_total{{{R}}}[$__rate_interval]))",
                      "{{route}} {{outcome}}")], "reqps"),
    )
    b.add(
        heatmap.Panel().title("Router score distribution (model=auto)").description(
            "Complexity scores of requests routed by score. Below t1: local; t1 to t2: local-think; above "
            "t2: cloud (thresholds in the next panel).").datasource(DS).span(16).height(8)
        .calculate(False).y_axis(heatmap_axis()).color(heatmap_colors()).cell_gap(1)
        .with_target(query('sum by (le) (increase(qroute_router_score_bucket{mode="auto"}[$__rate_interval]))',
                           "{{le}}", heatmap_format=True)),
        single("Routing thresholds", "The router's current thresholds: t1 (local-think above it) and t2 "
               "(cloud above it). PUT /admin/router changes them.",
               [query("max by (threshold) (qroute_router_threshold)", "{{threshold}}", instant=True)],
               "none", width=8, decimals=2, height=8),
    )
    b.add(
        series("Router decisions per second", "Routes the router chose for model=auto requests.",
               [query(f"sum by (route) (rate(qroute_router_decisions_total{{{R}}}[$__rate_interval]))",
                      "{{route}}")], "reqps", width=24),
    )

    b.row("Latency and throughput")
    b.add(
        series("Request latency p50/p95/p99 by route", "Whole request, arrival to last byte "
               "(gen_ai_client_operation_duration_seconds), by the route that answered.",
               quantiles("gen_ai_client_operation_duration_seconds", "route", R, "{{route}}"), "s"),
        series("Time to first token p50/p95/p99 by route", "Streamed requests: arrival to the first token "
               "sent (gen_ai_server_time_to_first_token_seconds).",
               quantiles("gen_ai_server_time_to_first_token_seconds", "route", R, "{{route}}"), "s"),
    )
    b.add(
        series("Tokens per second by route", "Prompt and completion tokens (reasoning included) processed per "
               "second.",
               [query(f'sum by (route, type) (rate(qroute_tokens_total{{{R}, type=~"prompt|completion"}}'
                      '[$__rate_interval]))', "{{route}} {{type}}")], "short"),
        series("Decode speed per stream (tokens per second)", "1 / mean time per output token of streamed "
               "answers (gen_ai_server_time_per_output_token_seconds): the speed one client sees.",
               [query(f"sum by (route) (rate(gen_ai_server_time_per_output_token_seconds_count{{{R}}}"
                      f"[$__rate_interval])) / sum by (route) (rate(gen_ai_server_time_per_output_token_seconds_sum"
                      f"{{{R}}}[$__rate_interval]))", "{{route}}")], "short"),
    )
    b.add(
        series("Gateway overhead p50/p99 by route", "The gateway's own time before the answer starts: routing, "
               "scoring, retrieval (upstream time excluded).",
               [q for q in quantiles("qroute_gateway_overhead_seconds", "route", R, "{{route}}")
                if q.build().ref_id != "B"], "s"),
        series("Retrieval time p50/p95", "Time to build a grounded context (search, fusion, rerank) for "
               "requests with retrieval on, by outcome.",
               [q for q in quantiles("qroute_retrieval_seconds", "outcome", "", "{{outcome}}")
                if q.build().ref_id != "C"], "s"),
    )

    b.row("Failures")
    b.add(
        series("Errors per second by route and outcome", "Requests that ended in the service's fault: "
               "upstream, retrieval, stream or internal errors (after any fallback).",
               [query(f'sum by (route, outcome) (rate(qroute_requests_total{{{R}, outcome=~"{ERROR_OUTCOMES}"}}'
                      '[$__rate_interval]))', "{{route}} {{outcome}}")], "reqps", width=8),
        series("Fallbacks per second", "A route failed before its first token and the next one was tried, by "
               "cause (an HTTP status, timeout, circuit_open, ...).",
               [query('sum by (from_route, to_route, cause) (rate(qroute_fallbacks_total{from_route=~"$route"}'
                      '[$__rate_interval]))', "{{from_route}} → {{to_route}} ({{cause}})")], "reqps", width=8),
        series("Requests in flight per backend", "Requests each backend is serving now (all replicas).",
               [query("sum by (backend) (qroute_backend_in_flight)", "{{backend}}")], "short", width=8),
    )
    b.add(
        statetimeline.Panel().title("Circuit breaker per backend").description(
            "Worst state over the replicas: closed, half-open (one probe let through) or open (requests go to "
            "the fallback route).").datasource(DS).span(24).height(6)
        .mappings([ValueMap(options={
            "0": ValueMappingResult(text="closed", color="green", index=0),
            "1": ValueMappingResult(text="half-open", color="yellow", index=1),
            "2": ValueMappingResult(text="open", color="red", index=2)})])
        .thresholds(db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
            Threshold(value=None, color="green"), Threshold(value=1, color="yellow"),
            Threshold(value=2, color="red")]))
        .with_target(query("max by (backend) (qroute_backend_breaker_state)", "{{backend}}")),
    )
    capacity_rows(b)
    shared_state_rows(b)
    learning_rows(b)
    return b


def capacity_rows(b: Board) -> None:
    b.row("Capacity and spill-over")
    b.add(
        series("Admission queue per backend", "Requests waiting for a slot of a backend with max_concurrent "
               "(qroute_admission_waiting); beyond max_queue or max_queue_wait_s they get 503 "
               "backend_overloaded.", [query("sum by (backend) (qroute_admission_waiting)", "{{backend}}")],
               "short", width=8),
        series("Admission wait p50/p95/p99", "How long requests waited for a backend slot (0 when one was "
               "free): tune max_concurrent and max_queue_wait_s against the TTFT you promise.",
               quantiles("qroute_admission_wait_seconds", "backend", "", "{{backend}}"), "s", width=8),
        series("Refused at capacity and spilled (per second)", "Requests refused with 503 backend_overloaded, "
               "and auto requests sent to the cloud instead of a saturated local backend (auto:spill).",
               [query(f'sum by (route) (rate(qroute_requests_total{{{R}, outcome="overloaded"}}[$__rate_interval]))',
                      "refused {{route}}"),
                query("sum by (from_route) (rate(qroute_spilled_total[$__rate_interval]))",
                      "spilled from {{from_route}}", "B")], "reqps", width=8),
    )
    b.add(
        series("Spill-over active per backend", "1 while a local backend counts as saturated (vLLM queue, "
               "admission wait, 429/503) and auto traffic for it goes to the cloud.",
               [query("max by (backend) (qroute_spill_active)", "{{backend}}")], "short", width=24, height=5),
    )


def shared_state_rows(b: Board) -> None:
    b.row("Shared state (Redis), cache and key limits")
    b.add(
        single("Redis answering", "The lowest qroute_redis_up over the replicas: 1 when every replica reaches "
               "Redis within its bound, 0 while one goes on without it (per-process limits, no shared cache).",
               [query("min(qroute_redis_up)", "redis up", instant=True)], "short", width=4,
               steps=[Threshold(value=None, color="red"), Threshold(value=1, color="green")]),
        series("Response cache hit ratio", "Hits over lookups of the exact-match response cache "
               "(deterministic requests only).",
               [query('sum(rate(qroute_cache_lookups_total{result="hit"}[$__rate_interval])) / '
                      "sum(rate(qroute_cache_lookups_total[$__rate_interval]))", "hit ratio")],
               "percentunit", width=7),
        series("Saved by the cache (CNY per hour)", "What cached answers would have cost upstream.",
               [query("sum(rate(qroute_cache_saved_cny_total[$__rate_interval])) * 3600", "saved")],
               "currencyCNY", width=6),
        series("Refused by key limits (per second)", "429s from a client key's limits, by limit: rpm, tpm, "
               "concurrent, budget.",
               [query("sum by (limit) (rate(qroute_rate_limited_total[$__rate_interval]))", "{{limit}}")],
               "reqps", width=7),
    )
    b.add(
        series("Key admissions by who decided (per second)", "view: a replica admitted on its own view of the "
               "key's usage (far from its limits, no wait for Redis); redis: Redis's verdict was waited for (near "
               "a limit); process: per-process counters (no Redis). Overshoots: admissions made on a view that "
               "Redis would have refused (lower limits.local_admission_below if they persist).",
               [query("sum by (decided) (rate(qroute_limit_admissions_total[$__rate_interval]))", "{{decided}}"),
                query("sum(rate(qroute_limit_view_overshoots_total[$__rate_interval]))", "overshoots", "B")],
               "reqps", width=12),
        series("Cache misses known without asking Redis", "Share of cache misses the replicas' index of stored "
               "answers decided on its own (the rest cost a round trip to Redis: the index was being rebuilt, "
               "or the key had been stored).",
               [query("sum(rate(qroute_cache_index_misses_total[$__rate_interval])) / "
                      'sum(rate(qroute_cache_lookups_total{result="miss"}[$__rate_interval]))', "from the index")],
               "percentunit", width=12),
    )


def learning_rows(b: Board) -> None:
    b.row("Router learning (shadow labels)")
    verdicts = "qroute_shadow_verdicts_total"
    b.add(
        bargauge.Panel().title("Local as good as the cloud, by score band (time range)").description(
            "Judged shadow pairs per router score tenth: the share where local's answer was as good as the "
            "cloud's (local or tie). Near 1 above t2: cloud calls local would answer as well (money); well "
            "below 1 under t2: local answers the cloud would do better (quality).")
        .datasource(DS).unit("percentunit").min(0).max(1).span(12).height(8)
        .thresholds(db.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
            Threshold(value=None, color="red"), Threshold(value=0.7, color="yellow"),
            Threshold(value=0.9, color="green")]))
        .with_target(query(f'sum by (band) (increase({verdicts}{{verdict=~"local|tie"}}[$__range])) / '
                           f"sum by (band) (increase({verdicts}[$__range]))", "{{band}}", instant=True)),
        series("Shadow requests per second by result", "sent, judged, skipped_busy (no free slot or open "
               "breaker), skipped_budget (router.shadow.max_spend_cny_per_day), unreadable, failed.",
               [query("sum by (result) (rate(qroute_shadow_requests_total[$__rate_interval]))", "{{result}}")],
               "reqps", width=6),
        series("Shadow and judge spend (CNY per hour)", "What shadow answers and judge calls cost, and judge "
               "calls per second.",
               [query("sum(rate(qroute_shadow_cost_cny_total[$__rate_interval])) * 3600", "spend"),
                query("sum(rate(qroute_shadow_judge_calls_total[$__rate_interval]))", "judge calls/s", "B")],
               "currencyCNY", width=6),
    )


def heatmap_axis() -> heatmap.YAxisConfig:
    return heatmap.YAxisConfig().unit("none").decimals(2)


def heatmap_colors() -> heatmap.HeatmapColorOptions:
    return (heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("Oranges")
            .scale(HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64).fill("dark-orange"))


# --- qroute: local vLLM -------------------------------------------------------------------------
def local_vllm() -> Board:
    b = Board("qroute-local-vllm", "qroute: local vLLM",
              "The self-hosted Qwen3-8B behind the local routes, from vLLM's own /metrics: queue, KV cache, "
              "time to first token and throughput.", ["qroute", "llm", "vllm"], "now-1h", "10s")
    b.variable(label_variable("model_name", "Model", "vllm:num_requests_running"))
    b.variable(label_variable("instance", "Instance", "vllm:num_requests_running"))
    sel = 'model_name=~"$model_name", instance=~"$instance"'

    b.row("Now")
    b.add(
        single("Requests running", "Requests in vLLM's execution batches now.",
               [query(f"sum(vllm:num_requests_running{{{sel}}})", "running", instant=True)], "short", width=6),
        single("Requests waiting", "Requests queued for a batch slot or KV-cache room; the VllmQueueBuildingUp "
               "alert fires above 5 for 5 minutes.",
               [query(f"sum(vllm:num_requests_waiting{{{sel}}})", "waiting", instant=True)], "short", width=6,
               steps=[Threshold(value=None, color="green"), Threshold(value=1, color="yellow"),
                      Threshold(value=5, color="red")]),
        single("KV cache usage", "Share of the KV cache in use (the fullest instance).",
               [query(f"max(vllm:kv_cache_usage_perc{{{sel}}})", "KV cache", instant=True)], "percentunit",
               width=6, decimals=1,
               steps=[Threshold(value=None, color="green"), Threshold(value=0.8, color="yellow"),
                      Threshold(value=0.95, color="red")]),
        single("Generation throughput", "Tokens generated per second, all instances.",
               [query(f"sum(rate(vllm:generation_tokens_total{{{sel}}}[$__rate_interval]))", "tokens/s",
                      instant=True)], "short", width=6, decimals=1),
    )

    b.row("Load")
    b.add(
        series("Queue: requests running and waiting", "vLLM's scheduler: requests being decoded and requests "
               "waiting for room.",
               [query(f"sum by (instance, model_name) (vllm:num_requests_running{{{sel}}})",
                      "running {{model_name}} {{instance}}"),
                query(f"sum by (instance, model_name) (vllm:num_requests_waiting{{{sel}}})",
                      "waiting {{model_name}} {{instance}}", "B")], "short"),
        series("KV cache usage", "Share of the KV cache in use per instance; near 100% new requests wait.",
               [query(f"max by (instance, model_name) (vllm:kv_cache_usage_perc{{{sel}}})",
                      "{{model_name}} {{instance}}")], "percentunit"),
    )

    b.row("Latency and throughput")
    b.add(
        series("Time to first token p50/p95/p99 (vLLM)", "vLLM's own histogram "
               "(vllm:time_to_first_token_seconds): queueing and prefill, without the gateway.",
               quantiles("vllm:time_to_first_token_seconds", "model_name", sel, "{{model_name}}"), "s"),
        series("End-to-end request latency p50/p95/p99 (vLLM)", "vllm:e2e_request_latency_seconds: arrival at "
               "vLLM to the last token.",
               quantiles("vllm:e2e_request_latency_seconds", "model_name", sel, "{{model_name}}"), "s"),
    )
    b.add(
        series("Generation and prompt throughput (tokens per second)", "Tokens generated (decode) and prompt "
               "tokens processed (prefill) per second.",
               [query(f"sum by (model_name) (rate(vllm:generation_tokens_total{{{sel}}}[$__rate_interval]))",
                      "generated {{model_name}}"),
                query(f"sum by (model_name) (rate(vllm:prompt_tokens_total{{{sel}}}[$__rate_interval]))",
                      "prompt {{model_name}}", "B")], "short", width=24),
    )
    return b


DASHBOARDS: dict[str, Callable[[], Board]] = {
    "qroute-cost-routing.json": cost_and_routing,
    "qroute-local-vllm.json": local_vllm,
}


def render() -> dict[str, str]:
    """File name -> the JSON text this script writes."""
    return {name: build().json() for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON files differ from what "
                        "this script would write; write nothing")
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON files go (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("stale dashboards (run python deploy/grafana/build_dashboards.py): "
              + ", ".join(str(p) for p in stale), file=sys.stderr)
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
