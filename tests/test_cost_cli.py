"""`qroute cost` as other tools drive it: a process, a table or one JSON object, exit 2 on bad input.

Every expected figure is worked out here, by hand, from the reference's inputs, not from the code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from textkit.tokens import approx_tokens

QROUTE = [sys.executable, "-m", "gateway.cli"]
A100_MONTH = 60000 / 36  # 60,000 CNY over 3 years = 36 months
A100_PER_S = 60000 / (3 * 365.25 * 86400)
CALLS_MONTH = 100000 * 30


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*QROUTE, *args], input=stdin, capture_output=True, text=True, timeout=120)


def cost_json(*args: str) -> dict:
    out = run("cost", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def by_model(result: dict) -> dict[str, dict]:
    return {o["model"]: o for o in result["cloud"]}


def test_reference_figures_are_computed():
    result = cost_json()
    cloud = by_model(result)
    assert set(cloud) == {"qwen3-8b", "qwen3-32b", "qwen3-72b"}
    # 100,000 calls a day x 30 days x 200 output tokens x CNY per million output tokens.
    assert cloud["qwen3-8b"]["monthly_cny"] == pytest.approx(100000 * 30 * 200 * 0.6 / 1e6) == pytest.approx(360)
    assert cloud["qwen3-32b"]["monthly_cny"] == pytest.approx(100000 * 30 * 200 * 4 / 1e6) == pytest.approx(2400)
    assert cloud["qwen3-72b"]["monthly_cny"] == pytest.approx(100000 * 30 * 200 * 8 / 1e6) == pytest.approx(4800)
    assert cloud["qwen3-72b"]["per_10k_calls_cny"] == pytest.approx(10000 * 200 * 8 / 1e6) == pytest.approx(16)
    assert cloud["qwen3-8b"]["per_call_cny"] == pytest.approx(200 * 0.6 / 1e6)
    assert result["local"]["monthly_cny"] == pytest.approx(A100_MONTH) == pytest.approx(1666.67, abs=0.01)
    plan = result["plan"]
    assert plan["cloud_model"] == "qwen3-72b" and plan["cloud_share"] == 0.2
    assert plan["monthly_cny"] == pytest.approx(A100_MONTH + 0.2 * 4800)  # the GPU is fixed, the cloud scales
    assert plan["saved_cny"] == pytest.approx(4800 - A100_MONTH - 960)
    assert plan["local_calls_per_day"] == pytest.approx(80000)
    assert result["traffic"]["calls_per_month"] == CALLS_MONTH


def test_break_even_calls_per_day():
    cloud = by_model(cost_json())
    for model, out_price in (("qwen3-8b", 0.6), ("qwen3-32b", 4), ("qwen3-72b", 8)):
        per_call = 200 * out_price / 1e6
        calls = A100_MONTH / (per_call * 30)
        assert cloud[model]["break_even_calls_per_day"] == pytest.approx(calls)
        # At those calls the cloud model's month costs exactly the GPU's month.
        assert calls * 30 * per_call == pytest.approx(A100_MONTH)
        assert cloud[model]["break_even_concurrency"] == pytest.approx(calls * 200 / 86400 / 75)
    assert cloud["qwen3-72b"]["break_even_calls_per_day"] == pytest.approx(34722.2, abs=0.1)


def test_the_reference_tables_inconsistency_is_stated():
    out = run("cost")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "monthly column is 10 x its per-10,000-calls column" in text
    assert "3,000,000 calls a month, 300 x the per-10,000-calls cost" in text
    assert "30 times too low" in text
    assert "input tokens are 0 by default because the reference counts output tokens only" in text
    check = cost_json()["reference_check"]
    assert check["factor"] == 300 and check["reference_factor"] == 10 and check["understated_by"] == 30
    # The inputs of the formulas are shown.
    assert "60,000 CNY over 3 years" in text and "100,000 calls/day x 30 days" in text
    assert "4,800.00" in text and "1,666.67" in text and "2,626.67" in text and "34,722" in text


def test_other_traffic_changes_the_factor():
    result = cost_json("--calls-per-day", "50000", "--days-per-month", "31")
    assert result["reference_check"]["factor"] == pytest.approx(50000 * 31 / 10000)
    assert by_model(result)["qwen3-72b"]["monthly_cny"] == pytest.approx(50000 * 31 * 200 * 8 / 1e6)


def test_local_cost_per_million_tokens_depends_on_concurrency():
    result = cost_json()
    rows = {r["concurrent"]: r["cny_per_million_output_tokens"] for r in result["concurrency"]}
    assert set(rows) == {1, 3, 8}
    for c, value in rows.items():
        assert value == pytest.approx(A100_PER_S * (1e6 / 75) / c)
    assert rows[1] == pytest.approx(8.45, abs=0.01)  # dearer than the 72b-class cloud at one request at a time
    text = run("cost", "--local-tokens-per-second", "150").stdout
    assert "throughput per request held constant" in text and "capacity bench" in text
    assert cost_json("--local-tokens-per-second", "150")["concurrency"][0]["cny_per_million_output_tokens"] == \
        pytest.approx(A100_PER_S * 1e6 / 150)


def _demo_config(tmp_path, **router: float) -> str:
    cfg = yaml.safe_load(open("deploy/qroute.demo.yaml"))
    cfg["router"].update(router)
    cfg["router"]["state_file"] = None
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_config_prices_and_hardware(tmp_path):
    result = cost_json("--config", _demo_config(tmp_path), "--input-tokens", "300", "--cloud-share", "0.3")
    cloud = by_model(result)
    assert set(cloud) == {"qwen3-8b", "qwen3-32b", "qwen3-72b", "qwen3-235b-a22b"}
    assert cloud["qwen3-32b"]["monthly_cny"] == pytest.approx(CALLS_MONTH * (300 * 2 + 200 * 4) / 1e6)
    # The demo's A100 draws 400 W at 0.7 CNY/kWh; a month is a twelfth of a year.
    month = (60000 / (3 * 365.25 * 86400) + 0.4 * 0.7 / 3600) * 365.25 / 12 * 86400
    assert result["local"]["monthly_cny"] == pytest.approx(month)
    assert result["local"]["source"] == "backends.vllm-local.hardware"
    plan = result["plan"]
    assert plan["cloud_model"] == "qwen3-235b-a22b"  # the cloud route's model
    assert plan["monthly_cny"] == pytest.approx(month + 0.3 * CALLS_MONTH * (300 * 4 + 200 * 8) / 1e6)
    assert result["notes"] == []  # input tokens were given


def test_json_shape():
    result = cost_json()
    assert set(result) >= {"traffic", "prices_from", "cloud", "local", "plan", "reference_check",
                           "local_tokens_per_second", "concurrency", "notes", "sample"}
    assert set(result["traffic"]) == {"calls_per_day", "output_tokens", "input_tokens", "days_per_month",
                                      "calls_per_month"}
    assert set(result["cloud"][0]) == {"model", "input_cny_per_million", "output_cny_per_million", "per_call_cny",
                                       "per_10k_calls_cny", "monthly_cny", "break_even_calls_per_day",
                                       "break_even_concurrency"}
    assert set(result["local"]) == {"source", "hardware", "cny_per_second", "monthly_cny"}
    assert result["sample"] is None
    assert [o["model"] for o in result["cloud"]] == ["qwen3-8b", "qwen3-32b", "qwen3-72b"]  # cheapest first


TEXTS = [f"question {i} " + "why and how " * (i % 7) + "请分别计算两家公司的净利润增长率，对比并分析原因。" * (2 * (i % 5))
         + ("Prove the bound step by step and derive the constant. " if i % 4 == 0 else "")
         for i in range(120)]


@pytest.fixture
def sample(tmp_path):
    path = tmp_path / "traffic.jsonl"
    rows = [json.dumps({"id": i, "messages": [{"role": "user", "content": t}]}, ensure_ascii=False)
            for i, t in enumerate(TEXTS)]
    path.write_text("\n".join([*rows, "not json"]) + "\n")
    return str(path)


def rescore(config: str, sample: str) -> list[str]:
    """Routes from `qroute route score` at the config's thresholds, as the gateway would decide."""
    out = run("route", "score", "--config", config, stdin=open(sample).read())
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["route"] for line in out.stdout.splitlines()]


def month_of(routes: list[str], fixed: float) -> float:
    """The month by hand: the GPU's fixed cost plus each cloud request at qwen3-235b-a22b's 4/8."""
    cloud = sum((round(approx_tokens(t)) * 4 + 200 * 8) / 1e6 for t, r in zip(TEXTS, routes, strict=True)
                if r == "cloud")
    return fixed + CALLS_MONTH * cloud / len(TEXTS)


def test_sample_shares_and_monthly_cost(tmp_path, sample):
    config = _demo_config(tmp_path)
    out = run("cost", "--json", "--config", config, "--sample", sample)
    assert out.returncode == 0, out.stderr
    assert "line 121" in out.stderr  # the bad line is reported and skipped
    s = json.loads(out.stdout)["sample"]
    assert s["requests"] == 120 and (s["t1"], s["t2"]) == (0.2, 0.7)
    shares = {r["route"]: r["share"] for r in s["routes"]}
    assert set(shares) == {"local", "local-think", "cloud"}
    assert sum(shares.values()) == pytest.approx(1.0)
    routes = rescore(config, sample)
    assert shares == {r: pytest.approx(routes.count(r) / 120) for r in shares}
    assert s["monthly_cny"] == pytest.approx(month_of(routes, s["fixed_cny"]))
    text = run("cost", "--config", config, "--sample", sample).stdout
    assert "120 requests scored by the learned router at t1 0.2, t2 0.7" in text


def test_budget_thresholds_meet_the_budget(tmp_path, sample):
    config = _demo_config(tmp_path)
    base = json.loads(run("cost", "--json", "--config", config, "--sample", sample).stdout)["sample"]
    fixed = base["fixed_cny"]
    budget = fixed + (base["monthly_cny"] - fixed) * 3  # room for more cloud traffic than now
    out = run("cost", "--json", "--config", config, "--sample", sample, "--budget-cny-month", str(budget))
    assert out.returncode == 0, out.stderr
    b = json.loads(out.stdout)["sample"]["budget"]
    assert b["feasible"] and b["t1"] <= b["t2"] and b["monthly_cny"] <= budget
    assert b["cloud_share"] > shares_cloud(base)  # the budget buys more cloud than the current thresholds
    # Re-score the sample at those thresholds and price it by hand: within the budget.
    checked = _demo_config(tmp_path, t1=b["t1"], t2=b["t2"])
    routes = rescore(checked, sample)
    assert routes.count("cloud") / 120 == pytest.approx(b["cloud_share"])
    assert month_of(routes, fixed) <= budget
    assert month_of(routes, fixed) == pytest.approx(b["monthly_cny"])


def shares_cloud(sample_result: dict) -> float:
    return next(r["share"] for r in sample_result["routes"] if r["route"] == "cloud")


def test_a_budget_below_the_gpu_cannot_be_met(sample):
    out = run("cost", "--sample", sample, "--budget-cny-month", "1000")
    assert out.returncode == 0, out.stderr
    assert "no thresholds meet it" in out.stdout and "fixed 1,666.67" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["--config", "/nonexistent/q.yaml"], "config file not found"),
    (["--sample", "/nonexistent/s.jsonl"], "No such file"),
    (["--cloud-share", "1.5"], "--cloud-share"),
    (["--calls-per-day", "-5"], "--calls-per-day"),
    (["--budget-cny-month", "100"], "needs --sample"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    out = run("cost", *args)
    assert out.returncode == 2
    assert out.stderr.startswith("qroute cost: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stdout == ""


def test_bad_config_is_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends: {}\nroutes: {}\nprices: {x: {input: -1}}\n")
    out = run("cost", "--config", str(bad))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    cfg = yaml.safe_load(open("deploy/qroute.demo.yaml"))
    del cfg["prices"]["qwen3-235b-a22b"]
    unpriced = tmp_path / "unpriced.yaml"
    unpriced.write_text(yaml.safe_dump(cfg))
    out = run("cost", "--config", str(unpriced))
    assert out.returncode == 2 and "no price for the cloud route's model 'qwen3-235b-a22b'" in out.stderr
