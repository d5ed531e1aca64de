"""`qroute demo`: simulated backends + the gateway, sample queries through the real openai client.

Prints one row per query (complexity score, route, time to first token, total time, tokens,
cost in CNY as the gateway priced it in the stream's usage), then spend and savings read back from
the gateway's own /metrics, then keeps serving until Ctrl-C unless asked to exit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

from gateway import scrape
from gateway.commands.report import report_from_samples, write_report
from gateway.settings import load_settings
from router.routes import CLOUD, LOCAL

DEMO_KEY = "sk-qroute-demo"
REPORT_PNG = ".qroute/demo-report.png"

SAMPLE_QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    ("What is the capital of France?", "auto", {}),
    ("华东精工的客服电话是多少？", "auto", {}),
    ("A train leaves at 9:40 and arrives at 13:15. How long is the trip in minutes?", "auto", {}),
    ("请总结下面这段话的要点：公司今年在华东新建了两条产线，产能提升30%，但原材料成本上升导致毛利率下降。", "auto", {}),
    ("分析我们公司过去三年在华东和华南两个区域的销售数据，分别列举增长最快的三个产品线，"
     "对比它们的毛利率变化，推导出明年的预算分配方案，并说明每一步计算的依据和权衡。" * 2, "auto", {}),
    ("东岭农商银行面临什么问题，启明的哪款产品能解决？", "auto", {"rag": True}),
    ("比较启明金融科技和云策科技的产品、客户和优劣势。", "auto", {"rag": True}),
    ("Summarise this contract clause in one sentence.", CLOUD, {}),
    ("Prove that the square root of 2 is irrational.", LOCAL, {"reasoning_effort": "high"}),
]


@dataclass
class Row:
    query: str
    score: str
    route: str
    ttft_s: float
    total_s: float
    tokens: int
    cost: float | None
    sources: int


def _wait_port(host: str, port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout_s:.0f} s")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def _ask(client: Any, query: str, model: str, extra: dict[str, Any]) -> Row:
    started = time.perf_counter()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": query}], stream=True,
        stream_options={"include_usage": True}, extra_body=extra or None,
    )
    ttft = None
    usage: dict[str, Any] | None = None
    for chunk in raw.parse():
        if ttft is None and chunk.choices and (chunk.choices[0].delta.content
                                               or getattr(chunk.choices[0].delta, "reasoning_content", None)):
            ttft = time.perf_counter() - started
        if chunk.usage:
            usage = chunk.usage.model_dump()
    total = time.perf_counter() - started
    return Row(
        query=query, score=raw.headers.get("x-qroute-score", "?"), route=raw.headers.get("x-qroute-route", "?"),
        ttft_s=ttft or total, total_s=total, tokens=(usage or {}).get("completion_tokens", 0),
        cost=(usage or {}).get("qroute_cost_cny"),
        sources=len(json.loads(raw.headers.get("x-qroute-sources", "[]"))),
    )


def _cells(ch: str) -> int:
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def _short(text: str, width: int = 34) -> str:
    """Cut and pad to `width` terminal cells (CJK characters take two)."""
    out, used = "", 0
    for ch in " ".join(text.split()):
        if used + _cells(ch) > width - 1:
            out += "…"
            used += 1
            break
        out += ch
        used += _cells(ch)
    return out + " " * (width - used)


def print_table(rows: list[Row], spent: scrape.Spend, metrics_url: str) -> None:
    print(f"\n{'query':<36}{'score':>7}  {'route':<12}{'ttft s':>8}{'total s':>9}{'tokens':>8}{'cost CNY':>12}"
          f"{'sources':>9}")
    print("-" * 101)
    for r in rows:
        cost = f"{r.cost:.6f}" if r.cost is not None else "n/a"
        print(f"{_short(r.query, 36)}{r.score:>7}  {r.route:<12}"
              f"{r.ttft_s:>8.3f}{r.total_s:>9.3f}{r.tokens:>8}{cost:>12}{r.sources or '':>9}")
    print("-" * 101)
    routes = ", ".join(f"{route} {cny:.6f}" for route, cny in sorted(spent.by_route.items()))
    print(f"from {metrics_url}: spent {spent.cost_cny:.6f} CNY ({routes}); all-cloud would have cost "
          f"{spent.cloud_equivalent_cny:.6f} CNY (saved {spent.saved_cny:.6f} CNY)")


def run_demo(config_path: str, exit_after_table: bool) -> int:
    from openai import OpenAI

    settings = load_settings(config_path)
    host, port = settings.server.host, settings.server.port
    upstream_ports = [8000, 8001]
    busy = [taken for taken in [*upstream_ports, port] if not _port_free(host, taken)]
    if busy:
        print(f"qroute demo: port(s) {busy} on {host} are in use; stop what holds them first.", file=sys.stderr)
        return 1
    procs = [
        subprocess.Popen([sys.executable, "-m", "gateway.cli", "sim"]),
        subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", config_path]),
    ]
    try:
        for listening in [*upstream_ports, port]:
            _wait_port(host, listening)
        client = OpenAI(base_url=f"http://{host}:{port}/v1", api_key=DEMO_KEY, max_retries=0)
        rows = [_ask(client, q, model, extra) for q, model, extra in SAMPLE_QUERIES]
        metrics_url = f"http://{host}:{port}/metrics"
        samples = scrape.fetch(metrics_url, DEMO_KEY)
        print_table(rows, scrape.spend(samples), metrics_url)
        write_report(report_from_samples(samples, source=metrics_url), REPORT_PNG)
        print(f"report: {REPORT_PNG} (qroute report --metrics {metrics_url} --out FILE)")
        if exit_after_table:
            return 0
        print(f"\ngateway serving on http://{host}:{port}/v1 (key {DEMO_KEY}); Ctrl-C to stop", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop on TERM as on Ctrl-C
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        return 1  # a child died: say so through the exit status
    except KeyboardInterrupt:
        return 0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
