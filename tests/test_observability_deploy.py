"""deploy/: the Grafana dashboards are what build_dashboards.py generates and are well formed, every
metric they or the Prometheus rules read is one the gateway or vLLM exports, the provisioning files
point at what exists, and promtool accepts the Prometheus config and rules.
(tests/test_prometheus_live.py runs every expression against a real Prometheus.)"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import yaml

from gateway.scrape import parse
from simulator.app import SimulatedUpstream
from simulator.behaviour import Behaviour
from simulator.harness import ServerThread
from tests.conftest import user
from tests.prometheus_server import (
    DASHBOARDS,
    PROMETHEUS_CONFIG,
    REPO,
    RULE_FILES,
    binary,
    dashboard_targets,
    rule_definitions,
)

GRAFANA = REPO / "deploy" / "grafana"
# vLLM's own metrics the dashboards and rules may read (vllm/v1/metrics/loggers.py; label model_name).
VLLM_METRICS = {
    "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
    *(f"vllm:{h}_{s}" for h in ("time_to_first_token_seconds", "e2e_request_latency_seconds")
      for s in ("bucket", "sum", "count")),
    "vllm:generation_tokens_total", "vllm:prompt_tokens_total",
}
PROMETHEUS_OWN = {"up", "ALERTS"}  # series Prometheus makes itself
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan", "Inf", "NaN"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and strings left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", s):
        if s[m.end():].lstrip().startswith("(") or m.group(0) in PROMQL_WORDS:
            continue  # a function or aggregation
        names.add(m.group(0))
    return names


def test_metric_names_parser():
    assert metric_names('histogram_quantile(0.95, sum by (route, le) (rate(a_bucket{route=~"x|y"}[5m])))') == {"a_bucket"}
    assert metric_names("sum(b) / ignoring (route) group_left () max(vllm:c{d=\"e\"}) or vector(0)") == {"b", "vllm:c"}
    assert metric_names("abs(x:y:z - on () max(t)) > on () max(u)") == {"x:y:z", "t", "u"}


# --- the dashboards ---------------------------------------------------------------------------------
def test_dashboards_are_what_the_builder_writes():
    builder = load_builder()
    rendered = builder.render()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert set(rendered) == set(on_disk), "run python deploy/grafana/build_dashboards.py"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run python deploy/grafana/build_dashboards.py"
    assert builder.main(["--check"]) == 0


def test_check_mode_reports_a_stale_file(tmp_path):
    builder = load_builder()
    assert builder.main(["--out", str(tmp_path)]) == 0
    assert builder.main(["--check", "--out", str(tmp_path)]) == 0
    victim = sorted(tmp_path.glob("*.json"))[0]
    victim.write_text(victim.read_text(encoding="utf-8").replace('"title"', '"title" ', 1), encoding="utf-8")
    assert builder.main(["--check", "--out", str(tmp_path)]) == 1
    proc = subprocess.run([sys.executable, str(GRAFANA / "build_dashboards.py"), "--check", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and victim.name in proc.stderr


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_structure(path: Path):
    board = json.loads(path.read_text(encoding="utf-8"))
    assert board["uid"] and board["title"].startswith("qroute: ")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == provisioned_datasource()["uid"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids), ids
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len(graphs) >= 5
    for panel in graphs:
        where = f"{path.name}: {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
        assert panel.get("targets"), where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), where
            assert target["datasource"] == panel["datasource"], where
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= set(variables) | {"__rate_interval", "__interval", "__range"}, (where, used)
    for name, variable in variables.items():
        if variable["type"] == "query":
            assert variable["multi"] and variable["includeAll"] and variable["allValue"] == ".*", name
            assert variable["datasource"]["uid"] == "${datasource}", name


def test_cost_dashboard_has_the_panels_ops_asked_for():
    board = json.loads((DASHBOARDS / "qroute-cost-routing.json").read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets") or [])
    for needle in ("qroute_cost_cny_total", "qroute_cloud_equivalent_cost_cny_total", "qroute_requests_total",
                   "gen_ai_client_operation_duration_seconds_bucket", "gen_ai_server_time_to_first_token_seconds",
                   "qroute_tokens_total", "qroute_fallbacks_total", "qroute_backend_breaker_state",
                   "qroute_router_score_bucket", "qroute_router_threshold", "qroute_retrieval_seconds_bucket",
                   "qroute_gateway_overhead_seconds_bucket", "qroute_backend_hardware_cost_cny_per_second"):
        assert needle in exprs, needle
    assert "route" in {v["name"] for v in board["templating"]["list"]}
    assert any(p["type"] == "heatmap" for p in board["panels"])


# --- every metric read is one that is exported -------------------------------------------------------
@pytest.fixture(scope="module")
def exported_names(tmp_path_factory) -> set[str]:
    """Every sample name a real gateway's /metrics has after some traffic, with the names of declared
    families that have no sample yet; vLLM's names; Prometheus' own."""
    from tests.conftest import config_dict, settings_from, start_gateway

    local = SimulatedUpstream(Behaviour.for_flavour("vllm", zero_delay=True))
    cloud = SimulatedUpstream(Behaviour.for_flavour("dashscope", zero_delay=True))
    mp = pytest.MonkeyPatch()
    mp.setenv("QROUTE_TEST_DASHSCOPE_KEY", "sk-upstream")
    try:
        with ServerThread(local) as ls, ServerThread(cloud) as cs:
            hardware = {"gpu_price_cny": 60000, "amortise_years": 3, "gpus": 1, "power_watts": 400,
                        "electricity_cny_per_kwh": 0.7}
            cfg = config_dict(ls.base, cs.base, backends={"vllm-local": {
                "provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"{ls.base}/v1",
                "hardware": hardware}}, targets={"daily_spend_cny": 10, "cloud_share": 0.2})
            server, gw = start_gateway(settings_from(tmp_path_factory.mktemp("names"), cfg))
            try:
                gw.client.chat.completions.create(model="auto", messages=user("hi"))
                list(gw.client.chat.completions.create(model="cloud", messages=user("hi"), stream=True))
                local.behaviour.update({"fail_next": 1})
                gw.client.chat.completions.create(model="local", messages=user("hi"))
                text = httpx.get(f"{gw.base}/metrics", timeout=10).text
            finally:
                gw.close()
                server.__exit__()
            vllm_text = httpx.get(f"{ls.base}/metrics", timeout=10).text
    finally:
        mp.undo()
    names = {s.name for s in parse(text)}
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            names |= {family.name + s for s in HISTOGRAM_SUFFIXES}
        elif family.type == "counter":
            names.add(family.name + "_total")
        else:
            names.add(family.name)
    assert {"qroute_cost_cny_total", "qroute_cloud_equivalent_cost_cny_total",
            "gen_ai_client_operation_duration_seconds_bucket", "qroute_target"} <= names
    assert VLLM_METRICS <= {s.name for s in parse(vllm_text)}  # the simulator speaks vLLM's names
    return names | VLLM_METRICS | PROMETHEUS_OWN


def test_every_panel_reads_exported_metrics(exported_names):
    unknown = {}
    for board, panel, target in dashboard_targets():
        missing = metric_names(target["expr"]) - exported_names
        if missing:
            unknown[f"{board}: {panel['title']} {target['refId']}"] = missing
    assert not unknown, unknown


def test_every_rule_reads_exported_or_recorded_metrics(exported_names):
    rules = rule_definitions()
    recorded = {r["record"] for r in rules if "record" in r}
    unknown = {r.get("record") or r["alert"]: metric_names(r["expr"]) - exported_names - recorded for r in rules}
    assert not {k: v for k, v in unknown.items() if v}


def test_rules_are_well_formed():
    rules = rule_definitions()
    names = [r.get("record") or r["alert"] for r in rules]
    assert len(names) == len(set(names))
    alerts = [r for r in rules if "alert" in r]
    assert {a["alert"] for a in alerts} >= {"QrouteHighErrorRatio", "QrouteRouteLatencyHigh", "QrouteCloudShareDrift",
                                            "QrouteDailySpendOverBudget", "QrouteBreakerOpen", "VllmQueueBuildingUp"}
    for alert in alerts:
        assert alert.get("for"), alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"].get("summary") and alert["annotations"].get("description"), alert["alert"]
    exprs = " ".join(a["expr"] for a in alerts)
    for needle in ('qroute_target{target="cloud_share"}', 'qroute_target{target="cloud_share_tolerance"}',
                   'qroute_target{target="daily_spend_cny"}', "qroute_backend_breaker_state", "== 2",
                   "vllm:num_requests_waiting"):
        assert needle in exprs, needle
    records = {r["record"] for r in rules if "record" in r}
    for needle in ("p50", "p95", "p99", "cost_cny:increase1h", "cost_cny:increase1d", "savings", "cloud_share",
                   "errors:ratio", "requests:rate5m", "time_to_first_token"):
        assert any(needle in r for r in records), needle


# --- provisioning -------------------------------------------------------------------------------------
def provisioned_datasource() -> dict:
    config = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text(encoding="utf-8"))
    (source,) = [d for d in config["datasources"] if d["type"] == "prometheus"]
    return source


def test_datasource_provisioning():
    source = provisioned_datasource()
    assert source["uid"] == load_builder().DATASOURCE_UID
    assert source["url"].startswith("http://") and source["access"] == "proxy"


def test_dashboard_provider_points_at_the_dashboards_folder():
    path = GRAFANA / "provisioning" / "dashboards" / "qroute.yaml"
    text = path.read_text(encoding="utf-8")
    (provider,) = yaml.safe_load(text)["providers"]
    assert provider["type"] == "file"
    # The folder inside Grafana is the repository's folder mounted as the file documents it.
    mounts = {inside: outside for outside, inside in
              re.findall(r"^#\s*-\s*\./(\S+?):(/\S+?)(?::ro)?\s*$", text, re.MULTILINE)}
    assert provider["options"]["path"] in mounts, mounts
    repo_folder = REPO / mounts[provider["options"]["path"]]
    assert repo_folder.resolve() == DASHBOARDS.resolve()
    assert sorted(repo_folder.glob("*.json"))
    # The provisioning folder mounted there holds this file and the data source one.
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    assert (provisioning / "dashboards" / path.name).exists()
    assert (provisioning / "datasources" / "prometheus.yaml").exists()


def test_prometheus_config_scrapes_the_gateway_and_vllm():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["qroute"]["metrics_path"] == "/metrics" and jobs["vllm"]["metrics_path"] == "/metrics"
    assert jobs["qroute"]["static_configs"][0]["targets"] == ["qroute:4000"]
    assert jobs["vllm"]["static_configs"][0]["targets"] == ["vllm:8000"]
    assert config["rule_files"] == ["rules/*.yml"]
    assert sorted(PROMETHEUS_CONFIG.parent.glob(config["rule_files"][0])) == RULE_FILES


# --- promtool ------------------------------------------------------------------------------------------
def test_promtool_check_config():
    proc = subprocess.run([binary("promtool"), "check", "config", str(PROMETHEUS_CONFIG)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(RULE_FILES)} rule files found" in proc.stdout


def test_promtool_check_rules():
    proc = subprocess.run([binary("promtool"), "check", "rules", *map(str, RULE_FILES)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(RULE_FILES)
