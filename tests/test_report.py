"""`qroute report`: from a real gateway's /metrics (and from a real Prometheus scraping it), the
table's numbers are the counters', quantiles fall inside their buckets, and a PNG is written."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from gateway.commands.report import parse_duration, report_from_samples, write_report
from gateway.scrape import Sample, buckets_by, histogram_quantile, parse
from tests.conftest import user

QROUTE = [sys.executable, "-m", "gateway.cli", "report"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HARDWARE = {"gpu_price_cny": 60000, "amortise_years": 3, "gpus": 1, "power_watts": 400,
            "electricity_cny_per_kwh": 0.7}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*QROUTE, *args], capture_output=True, text=True, timeout=120)


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def load(gw, local_sim, cloud_sim) -> None:
    """Streamed and non-streamed answers on local and cloud, one rejected request."""
    local_sim[0].behaviour.update({"ttft_s": 0.03, "tokens_per_s": 2000})
    cloud_sim[0].behaviour.update({"ttft_s": 0.06, "tokens_per_s": 2000})
    for model in ("local", "cloud"):
        for _ in range(3):
            gw.client.chat.completions.create(model=model, messages=user("hi"))
            list(gw.client.chat.completions.create(model=model, messages=user("hi"), stream=True))
    gw.client.chat.completions.create(model="local", messages=user("hello"), stream=True,
                                      stream_options={"include_usage": True}).close()
    assert gw.http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": user()}).status_code == 404


@pytest.fixture
def loaded(make_gateway, local_sim, cloud_sim):
    backends = {"vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B",
                               "api_base": f"{local_sim[1].base}/v1", "hardware": HARDWARE,
                               "timeouts": {"connect_s": 0.5, "first_token_s": 1.0, "idle_s": 1.0, "total_s": 10}}}
    gw = make_gateway(backends=backends)
    load(gw, local_sim, cloud_sim)
    deadline = time.monotonic() + 5  # the closed stream is counted when the gateway notices
    while total(scrape(gw), "qroute_requests_total") < 14 and time.monotonic() < deadline:
        time.sleep(0.05)
    return gw


def scrape(gw) -> list[Sample]:
    return parse(httpx.get(f"{gw.base}/metrics", timeout=10).text)


def in_its_bucket(q: float, value: float, buckets: list[tuple[float, float]]) -> bool:
    """Where the q-quantile's rank falls, worked out from the raw cumulative counts."""
    rank = q * buckets[-1][1]
    lower = 0.0
    for le, count in buckets:
        if count >= rank:
            upper = le if math.isfinite(le) else lower
            return lower <= value <= upper
        lower = le
    return False


def test_metrics_report_equals_the_counters(loaded, tmp_path):
    out_png = tmp_path / "report.png"
    result = run("--metrics", f"{loaded.base}/metrics", "--out", str(out_png), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    m = scrape(loaded)  # no requests since: the same counts
    assert data["cost_cny"] == pytest.approx(total(m, "qroute_cost_cny_total"), rel=1e-9)
    assert data["cloud_equivalent_cny"] == pytest.approx(total(m, "qroute_cloud_equivalent_cost_cny_total"), rel=1e-9)
    assert data["saved_cny"] == pytest.approx(data["cloud_equivalent_cny"] - data["cost_cny"])
    for route in ("local", "cloud"):
        assert data["cost_by_route"][route] == pytest.approx(total(m, "qroute_cost_cny_total", route=route))
        assert data["requests_by_route"][route] == total(m, "qroute_requests_total", route=route)
    assert data["requests_by_route"] == {"local": 7, "cloud": 6, "none": 1}
    assert data["shares"] == {"local": pytest.approx(7 / 13), "cloud": pytest.approx(6 / 13)}
    assert data["cumulative"] is True and data["window"] == "since the gateway started"

    for metric, key in (("gen_ai_client_operation_duration_seconds", "p"), ("gen_ai_server_time_to_first_token_seconds",
                                                                             "ttft_p")):
        buckets = buckets_by(m, metric)
        for route in ("local", "cloud"):
            p50, p95 = data["latency"][route][f"{key}50_s"], data["latency"][route][f"{key}95_s"]
            assert 0 < p50 <= p95
            assert in_its_bucket(0.5, p50, buckets[route]) and in_its_bucket(0.95, p95, buckets[route])
    # The simulated cloud answers its first token later than the local one.
    assert data["latency"]["cloud"]["ttft_p50_s"] > data["latency"]["local"]["ttft_p50_s"]

    png = out_png.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000


def test_metrics_table(loaded, tmp_path):
    result = run("--metrics", f"{loaded.base}/metrics", "--out", str(tmp_path / "r.png"), "--since", "1h")
    assert result.returncode == 0, result.stderr
    m = scrape(loaded)
    text = result.stdout
    spent = total(m, "qroute_cost_cny_total")
    equivalent = total(m, "qroute_cloud_equivalent_cost_cny_total")
    assert f"spent {spent:.6f} CNY; all-cloud would have cost {equivalent:.6f} CNY" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] in (["local"], ["cloud"],
                                                                                                 ["total"])}
    assert rows["local"][1] == "7" and rows["cloud"][1] == "6" and rows["total"][1] == "13"
    assert float(rows["total"][2]) == pytest.approx(spent, abs=1e-6)
    assert float(rows["cloud"][3]) == pytest.approx(total(m, "qroute_cloud_equivalent_cost_cny_total", route="cloud"),
                                                    abs=1e-6)
    assert "cumulative since the gateway started" in text and "--since 1h ignored" in text
    assert "1 request(s) rejected before routing" in text
    assert "chart written to" in result.stderr


def test_write_report_for_the_demo(loaded, tmp_path):
    samples = scrape(loaded)
    data = write_report(samples, tmp_path / "demo.png")
    assert data.cost_cny == pytest.approx(total(samples, "qroute_cost_cny_total"))
    assert (tmp_path / "demo.png").read_bytes().startswith(PNG_MAGIC)
    from_url = write_report(f"{loaded.base}/metrics", tmp_path / "url.png")
    assert from_url.requests_by_route == data.requests_by_route


def test_histogram_quantile_as_prometheus():
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (math.inf, 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1 * 10 / 10)
    assert histogram_quantile(0.95, [(0.1, 1.0), (math.inf, 10.0)]) == 0.1  # in +Inf: the highest finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None  # nothing observed
    assert histogram_quantile(0.5, [(0.1, 3.0)]) is None  # no +Inf bucket
    assert report_from_samples([]).cost_cny == 0


def test_durations():
    assert parse_duration("1h") == 3600 and parse_duration("1h30m") == 5400 and parse_duration("7d") == 7 * 86400
    for bad in ("", "1x", "h", "0s", "-1h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_bad_input_is_exit_2(tmp_path, make_gateway):
    closed = run("--metrics", "http://127.0.0.1:9/metrics", "--out", str(tmp_path / "r.png"))
    assert closed.returncode == 2 and closed.stderr.startswith("qroute report: ")
    assert len(closed.stderr.strip().splitlines()) == 1
    assert run("--prometheus", "http://127.0.0.1:9", "--since", "soon").returncode == 2
    assert run("--out", "r.png").returncode == 2  # a source is required
    gw = make_gateway(metrics={"require_key": True})
    refused = run("--metrics", f"{gw.base}/metrics", "--out", str(tmp_path / "r.png"))
    assert refused.returncode == 2 and "401" in refused.stderr
    keyed = run("--metrics", f"{gw.base}/metrics", "--key", "sk-test-client", "--out", str(tmp_path / "r.png"))
    assert keyed.returncode == 0, keyed.stderr


# --- against a real Prometheus --------------------------------------------------------------------
def test_prometheus_report(loaded, local_sim, cloud_sim, tmp_path):
    """Skipped without the prometheus binary (tests/tools.sh installs it), failed instead under CI."""
    from tests.prometheus_server import PrometheusServer, binary

    binary("prometheus")
    host = loaded.base.removeprefix("http://")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "qroute", "static_configs": [{"targets": [host]}]}]}
    with PrometheusServer(yaml.safe_dump(config)) as prom:
        # increase() needs two samples of a series: the counts before the load, then after it.
        prom.wait_for('qroute_requests_total{route="cloud"}', timeout=30)
        before = scrape(loaded)
        load(loaded, local_sim, cloud_sim)
        time.sleep(0.3)  # the closed stream is counted when the gateway notices
        after = scrape(loaded)
        expected = total(after, "qroute_requests_total") - total(before, "qroute_requests_total")
        prom.wait_for(f"sum(qroute_requests_total) >= {total(after, 'qroute_requests_total')}", timeout=30)
        out_png = tmp_path / "prom.png"
        result = run("--prometheus", prom.base, "--since", "5m", "--out", str(out_png), "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        table = run("--prometheus", prom.base, "--since", "5m", "--out", str(tmp_path / "t.png"))
    assert table.returncode == 0, table.stderr
    assert "last 5m" in table.stdout and "spent" in table.stdout
    assert data["cumulative"] is False and data["window"] == "last 5m"
    # increase() over the window extrapolates, and the window holds the first scrape's counts too,
    # so the report sees at least this test's load and at most everything the gateway served.
    everything = total(after, "qroute_requests_total")
    assert expected <= sum(data["requests_by_route"].values()) * 1.0001 <= everything * 1.5
    spent = total(after, "qroute_cost_cny_total") - total(before, "qroute_cost_cny_total")
    assert data["cost_cny"] >= spent * 0.9999
    assert set(data["shares"]) >= {"local", "cloud"}
    for route in ("local", "cloud"):
        lat = data["latency"][route]
        assert 0 < lat["p50_s"] <= lat["p95_s"] <= 81.92 and 0 < lat["ttft_p50_s"] <= lat["ttft_p95_s"]
    assert data["spend_per_hour"] and data["requests_per_minute"]
    png = out_png.read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 20_000
