"""The dashboards and rules against a real Prometheus: it scrapes two gateway replicas (one with an open
circuit breaker), a replica that is down and the simulated vLLM, every second, with the rule files of
deploy/prometheus/rules/; the test drives traffic through the gateway (streamed and not, every route,
model=auto, retrieval, a fallback, failures) and then evaluates through the HTTP API every target of
every panel of both dashboards, every recording rule and every alert: each must parse and return
data, and every rule must be healthy.

The alerts are made to have data by the set-up: a tiny daily budget, a cloud-share target far from
the traffic's, failing requests, an open breaker, a vLLM queue and a target that is down. Only the
latency alert (p95 over 30 s) cannot be reached in a short test: its left-hand side is evaluated.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from gateway.limits import key_id
from simulator.app import SimulatedUpstream
from simulator.behaviour import Behaviour
from simulator.harness import ServerThread, free_port
from tests.conftest import CLIENT_KEY, RunningGateway, config_dict, settings_from, start_gateway, user
from tests.prometheus_server import (
    PROMETHEUS_CONFIG,
    RULE_FILES,
    PrometheusServer,
    binary,
    dashboard_targets,
    grafana_expr,
    rule_definitions,
)
from tests.redis_server import RedisServer

WINDOW = "30s"  # $__rate_interval, $__interval and $__range: 30 scrapes at 1 s
HARDWARE = {"gpu_price_cny": 60000, "amortise_years": 3, "gpus": 1, "power_watts": 400,
            "electricity_cny_per_kwh": 0.7}
TARGETS = {"daily_spend_cny": 0.000001, "cloud_share": 0.9, "cloud_share_tolerance": 0.05}
# Alerts whose condition a short test cannot meet: their left-hand side must have data instead.
LHS_ONLY = {"QrouteRouteLatencyHigh": "p95 latency over 30 s"}
QUEUE = 8  # simulated vLLM requests waiting (the queue alert fires above 5)
OVERSHOOT_KEY = "sk-test-overshoot"  # a key with an rpm limit that the test uses up behind the replica's back


@dataclass
class Stack:
    prom: PrometheusServer
    gateway: RunningGateway
    broken: RunningGateway
    local: SimulatedUpstream
    cloud: SimulatedUpstream
    small: RunningGateway  # its local backend takes one request at a time and queues none
    redis: RedisServer


def build_index(folder: Path) -> Path:
    src = folder / "src"
    src.mkdir()
    (src / "huadong.md").write_text("# 华东精工\n华东精工成立于2003年，总部位于苏州，主要生产精密数控机床，"
                                    "主要客户包括上汽集团和比亚迪。", encoding="utf-8")
    index = folder / "idx"
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "index", "build", "--input", str(src), "--index",
                          str(index), "--quiet"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return index


def scrape_config(qroute: list[str], vllm: list[str]) -> str:
    """deploy/prometheus/prometheus.yml with 1 s intervals, loopback targets, no Alertmanager."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    config.pop("alerting", None)
    targets = {"qroute": qroute, "vllm": vllm}
    jobs = [job for job in config["scrape_configs"] if job["job_name"] in targets]
    for job in jobs:
        job["static_configs"] = [{"targets": targets[job["job_name"]]}]
    assert {j["job_name"] for j in jobs} == set(targets)
    config["scrape_configs"] = jobs
    return yaml.safe_dump(config, sort_keys=False)


def hostport(base: str) -> str:
    return base.removeprefix("http://")


def drive(stack: Stack) -> None:
    """One wave of traffic: every route, streamed and not, model=auto, retrieval, a fallback, failures."""
    c = stack.gateway.client
    for _ in range(3):
        c.chat.completions.create(model="local", messages=user("hi"))
        list(c.chat.completions.create(model="local", messages=user("hi"), stream=True,
                                       stream_options={"include_usage": True}))
        list(c.chat.completions.create(model="local-think", messages=user("hi"), stream=True))
        c.chat.completions.create(model="cloud", messages=user("hi"))
        list(c.chat.completions.create(model="cloud", messages=user("hi"), stream=True))
        c.chat.completions.create(model="auto", messages=user("hi"))  # shadowed on the cloud and judged
    shadow_settled(stack)
    question = user("华东精工的主要客户有哪些？")
    c.chat.completions.create(model="local", messages=question, extra_body={"rag": True})
    list(c.chat.completions.create(model="local", messages=question, stream=True, extra_body={"rag": True}))
    stack.local.behaviour.update({"fail_next": 1})  # local fails before its first token: cloud answers
    raw = c.chat.completions.with_raw_response.create(model="local", messages=user())
    assert raw.headers["x-qroute-attempts"].endswith("cloud:ok")
    for _ in range(2):  # every route fails: an upstream error
        stack.local.behaviour.update({"fail_next": 1})
        stack.cloud.behaviour.update({"fail_next": 1})
        assert stack.gateway.http.post("/v1/chat/completions",
                                       json={"model": "local", "messages": user()}).status_code == 502
    # The other replica's local backend refuses connections: its breaker opens, the cloud answers.
    stack.broken.client.chat.completions.create(model="local", messages=user())
    for _ in range(2):  # deterministic: a miss, then a hit in the shared (Redis) response cache
        c.chat.completions.create(model="local", messages=user("cache me"), temperature=0)
    # Two at once on a backend with one slot and no queue: one is served, one refused (503 overloaded).
    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda _: stack.small.http.post(
            "/v1/chat/completions", json={"model": "local", "messages": user()}).status_code, range(2)))
    assert codes == [200, 503]
    view_overshoot(stack)


def view_overshoot(stack: Stack) -> None:
    """A key far from its limit is admitted on the replica's view of its usage; meanwhile another
    client uses up its limit in Redis: the next admission on the (still fresh) view is one Redis would
    have refused, and is counted."""
    headers = {"authorization": f"Bearer {OVERSHOOT_KEY}"}
    body = {"model": "local", "messages": user()}
    stack.gateway.http.post("/v1/chat/completions", json=body, headers=headers)  # Redis's verdict: a view
    stack.redis.command("ZADD", f"qroute:lim:{{{key_id(OVERSHOOT_KEY)}}}:rpm",
                        *[part for i in range(100) for part in ("1" + "0" * 15, f"elsewhere-{i}")])
    stack.gateway.http.post("/v1/chat/completions", json=body, headers=headers)


def shadow_settled(stack: Stack) -> None:
    """Shadow requests (and their judge calls) run after each auto answer: let them finish before a
    test injects upstream failures they could take instead."""
    shadow = stack.gateway.app.state.gateway.shadow
    deadline = time.monotonic() + 10
    while shadow.in_flight:
        assert time.monotonic() < deadline, "shadow requests did not finish"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    binary("prometheus")  # skip (or fail under CI) before starting anything
    local = SimulatedUpstream(Behaviour.for_flavour("vllm", zero_delay=True))
    cloud = SimulatedUpstream(Behaviour.for_flavour("dashscope", zero_delay=True))
    folder = tmp_path_factory.mktemp("prom-live")
    with contextlib.ExitStack() as exits:
        mp = exits.enter_context(pytest.MonkeyPatch.context())
        mp.setenv("QROUTE_TEST_DASHSCOPE_KEY", "sk-upstream-test")
        ls = exits.enter_context(ServerThread(local))
        cs = exits.enter_context(ServerThread(cloud))
        timeouts = {"connect_s": 0.5, "first_token_s": 1.0, "idle_s": 1.0, "total_s": 10}

        def gateway(local_base: str, admission: dict[str, int] | None = None, **overrides: object) -> RunningGateway:
            cfg = config_dict(ls.base, cs.base, backends={"vllm-local": {
                "provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"{local_base}/v1",
                "hardware": HARDWARE, "timeouts": timeouts, **(admission or {})}}, targets=TARGETS, **overrides)
            server, running = start_gateway(settings_from(folder, cfg))
            exits.callback(server.__exit__)
            exits.callback(running.close)
            return running

        redis = RedisServer().start()
        exits.callback(redis.stop)
        main = gateway(ls.base, retrieval={"index": str(build_index(folder)), "top_k": 3},
                       redis={"url": redis.url}, cache={"enabled": True}, admission={"max_concurrent": 4},
                       auth={"api_keys": [CLIENT_KEY, OVERSHOOT_KEY], "api_keys_env": None},
                       limits={"keys": {key_id(OVERSHOOT_KEY): {"rpm": 100}}},
                       router={"state_file": None, "shadow": {"share": 1.0, "out": str(folder / "shadow.jsonl"),
                                                              "max_concurrent": 8}})
        # ... and its Redis is not there: it goes on without it (qroute_redis_up 0).
        broken = gateway(f"http://127.0.0.1:{free_port()}", breaker={"failure_threshold": 1, "reset_after_s": 600},
                         redis={"url": f"redis://127.0.0.1:{free_port()}/0"})
        slow = SimulatedUpstream(Behaviour.for_flavour("vllm", ttft_s=0.5, tokens_per_s=0))
        sl = exits.enter_context(ServerThread(slow))
        small = gateway(sl.base, admission={"max_concurrent": 1, "max_queue": 0}, spill={"enabled": False})
        down = f"127.0.0.1:{free_port()}"  # a replica that is down: nothing listens there
        config = scrape_config([hostport(main.base), hostport(broken.base), hostport(small.base), down],
                               [hostport(ls.base)])
        prom = exits.enter_context(PrometheusServer(config, RULE_FILES))
        s = Stack(prom, main, broken, local, cloud, small, redis)
        # Counters must be seen before and after the traffic, or their rates are empty or zero.
        prom.wait_for('count(up{job="qroute"} == 1) == 3', timeout=15)
        prom.wait_for('up{job="vllm"} == 1', timeout=15)
        # Two waves a few scrapes apart: a series a wave creates (a route's first cost, a fallback) has
        # no increase until a later scrape sees it grow.
        drive(s)
        time.sleep(2.5)
        drive(s)
        local.behaviour.update({"waiting_requests": QUEUE})
        for rule in rule_definitions():
            if "alert" in rule and rule["alert"] not in LHS_ONLY:
                prom.wait_for(f'ALERTS{{alertname="{rule["alert"]}"}}', timeout=20)
        yield s


# --- every panel target --------------------------------------------------------------------------------
PANEL_TARGETS = dashboard_targets()


@pytest.mark.parametrize(("board", "panel", "target"), PANEL_TARGETS,
                         ids=[f"{b.removesuffix('.json')}:{p['id']}:{t['refId']}" for b, p, t in PANEL_TARGETS])
def test_panel_target_returns_data(stack, board, panel, target):
    expr = grafana_expr(target["expr"], WINDOW)
    answer = stack.prom.query(expr)
    assert answer["status"] == "success", (panel["title"], expr, answer.get("error"))
    assert stack.prom.wait_for(expr, timeout=5), (panel["title"], expr)


# --- every rule ------------------------------------------------------------------------------------------
RULES = rule_definitions()


def comparison_lhs(expr: str) -> str | None:
    """The left-hand side of an expression's top-level comparison (None without one)."""
    depth, i, quoted = 0, 0, False
    while i < len(expr):
        ch = expr[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and any(expr.startswith(op, i) for op in (">=", "<=", "==", "!=", ">", "<")):
            return expr[:i].strip()
        i += 1
    return None


def test_comparison_lhs():
    assert comparison_lhs('abs(a - on () max(t{x="y"})) > on () max(u)') == 'abs(a - on () max(t{x="y"}))'
    assert comparison_lhs('up{job=~"a|b"} == 0') == 'up{job=~"a|b"}'
    assert comparison_lhs("sum(rate(x[5m]))") is None


@pytest.mark.parametrize("rule", RULES, ids=[r.get("record") or r["alert"] for r in RULES])
def test_rule_returns_data(stack, rule):
    answer = stack.prom.query(rule["expr"])
    assert answer["status"] == "success", answer.get("error")
    expr = rule["expr"]
    if rule.get("alert") in LHS_ONLY:
        lhs = comparison_lhs(expr)
        assert lhs, f"{rule['alert']} has no comparison"
        expr = lhs
    assert stack.prom.wait_for(expr, timeout=5)


def test_every_rule_is_loaded_and_healthy(stack):
    deadline = time.monotonic() + 10
    while True:
        loaded = stack.prom.rules()
        unhealthy = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
        if not unhealthy or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not unhealthy
    assert sorted(r["name"] for r in loaded) == sorted(r.get("record") or r["alert"] for r in RULES)


def test_alerts_the_setup_provokes_are_active(stack):
    active = {a["labels"]["alertname"]: a for a in stack.prom.alerts()}
    expected = {r["alert"] for r in RULES if "alert" in r} - set(LHS_ONLY)
    assert expected <= set(active), expected - set(active)
    assert active["QrouteBreakerOpen"]["labels"]["backend"] == "vllm-local"
    assert active["VllmQueueBuildingUp"]["labels"]["model_name"] == "Qwen/Qwen3-8B"
    assert active["QrouteTargetDown"]["labels"]["job"] == "qroute"
    assert all(a["labels"]["severity"] in {"critical", "warning"} for a in active.values())
    assert all(a["annotations"]["summary"] and "{{" not in a["annotations"]["summary"] for a in active.values())


def test_gateway_numbers_reach_prometheus(stack):
    """Spot checks that the numbers mean what the panels say."""
    errors = stack.prom.result('sum(qroute_requests_total{outcome="upstream_error"})')
    assert float(errors[0]["value"][1]) == 4  # two waves of two
    queue = stack.prom.result("sum(vllm:num_requests_waiting)")
    assert float(queue[0]["value"][1]) == QUEUE
    saved = stack.prom.result("sum(qroute_cloud_equivalent_cost_cny_total) - sum(qroute_cost_cny_total)")
    assert float(saved[0]["value"][1]) > 0  # local answers cost less than their cloud price
    share = stack.prom.result("qroute:qroute_router_cloud_share:ratio_rate1h")
    assert float(share[0]["value"][1]) == 0  # "hi" is simple: the router kept it local
