"""A real Prometheus server for tests: the Debian `prometheus` binary on a free loopback port, with a
config and rule files the test gives, and a small client for its HTTP API.

    with PrometheusServer(config_yaml_text, rule_files) as prom:
        prom.wait_for('up{job="qroute"} == 1', timeout=10)
        prom.query("sum(rate(qroute_requests_total[30s]))")["data"]["result"]

`tests/tools.sh` installs the binary. Tests skip when it is missing, except under CI (the variable CI
is set), where a missing binary fails them: CI must not pass by testing nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from simulator.harness import free_port

__all__ = ["PrometheusServer", "binary", "dashboard_targets", "grafana_expr", "rule_definitions"]

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULE_FILES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range")


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool`; skip the test when there is none (fail under CI)."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found:
        return found
    message = f"{name} not found: run `bash tests/tools.sh` (Debian package prometheus)"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: a missing tool is a failure)", pytrace=False)
    pytest.skip(message)


class PrometheusServer:
    """Prometheus with `config_yaml_text` (its `rule_files` replaced by copies of `rule_files`), its own
    data folder and a free port; stopped and removed when the block ends."""

    def __init__(self, config_yaml_text: str, rule_files: Iterable[str | Path] = (), start_timeout_s: float = 30.0,
                 extra_args: Iterable[str] = ()) -> None:
        self.config = yaml.safe_load(config_yaml_text) or {}
        self.rule_files = [Path(p) for p in rule_files]
        self.start_timeout_s = start_timeout_s
        self.extra_args = list(extra_args)
        self.port = 0
        self.base = ""
        self.folder: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.http: httpx.Client | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> PrometheusServer:
        exe = binary("prometheus")
        self.folder = Path(tempfile.mkdtemp(prefix="qroute-prometheus-"))
        rules = self.folder / "rules"
        rules.mkdir()
        copies = []
        for i, src in enumerate(self.rule_files):
            dst = rules / f"{i:02d}-{src.name}"
            shutil.copyfile(src, dst)
            copies.append(str(dst))
        config = dict(self.config)
        config["rule_files"] = copies
        config_path = self.folder / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        for _ in range(3):  # the free port may be taken between choosing and binding it
            try:
                self._start(exe, config_path)
                return self
            except _PortTaken:
                continue
        raise RuntimeError("prometheus could not bind a free port three times")

    def _start(self, exe: str, config_path: Path) -> None:
        assert self.folder is not None
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        log = (self.folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [exe, f"--config.file={config_path}", f"--storage.tsdb.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.http = httpx.Client(base_url=self.base, timeout=10)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = self.log()
                self._stop()
                if "address already in use" in text:
                    raise _PortTaken
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{text}")
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        text = self.log()
        self._stop()
        raise RuntimeError(f"prometheus not ready after {self.start_timeout_s} s:\n{text}")

    def __exit__(self, *exc: object) -> None:
        self._stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _stop(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log(self) -> str:
        """What the server wrote so far (warnings and errors)."""
        path = self.folder / "prometheus.log" if self.folder is not None else None
        return path.read_text(encoding="utf-8", errors="replace") if path is not None and path.exists() else ""

    # --- HTTP API -------------------------------------------------------------------------------
    def _get(self, path: str, **params: Any) -> dict[str, Any]:
        assert self.http is not None, "the server is not running"
        return dict(self.http.get(path, params=params).json())

    def query(self, expr: str, at: float | None = None) -> dict[str, Any]:
        """The JSON answer of /api/v1/query: `status` ("success" or "error"), `data.result`, `error`."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        assert self.http is not None, "the server is not running"
        return dict(self.http.post("/api/v1/query", data=params).json())

    def result(self, expr: str) -> list[dict[str, Any]]:
        """The query's result; an expression Prometheus rejects raises AssertionError."""
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer.get('errorType')}: {answer.get('error')}"
        return list(answer["data"]["result"])

    def wait_for(self, expr: str, timeout: float = 10.0, interval: float = 0.1) -> list[dict[str, Any]]:
        """Poll until `expr` returns a non-empty result, and return it; AssertionError on a rejected
        expression or when `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.result(expr)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no data for {expr} after {timeout} s")
            time.sleep(interval)

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule (recording and alerting) with its group, health and last error."""
        groups = self._get("/api/v1/rules")["data"]["groups"]
        return [{**rule, "group": group["name"]} for group in groups for rule in group["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/alerts")["data"]["alerts"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets")["data"]["activeTargets"])


class _PortTaken(Exception):
    pass


# --- the deploy files' expressions -------------------------------------------------------------------
def dashboard_targets() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file name, panel, target) for every query target of every committed dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text(encoding="utf-8"))
        for panel in _panels(board["panels"]):
            for target in panel.get("targets") or []:
                found.append((path.name, panel, target))
    return found


def _panels(panels: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # panels inside collapsed rows


def grafana_expr(expr: str, window: str = "30s") -> str:
    """A panel's expression as Grafana would send it: $__rate_interval, $__interval and $__range become
    `window`; every template variable (multi-value, "All" = .*) becomes `.*`."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return window if name in GRAFANA_INTERVALS else ".*"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def rule_definitions() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/rules/*.yml, with its `group` and `file` added."""
    rules = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                rules.append({**rule, "group": group["name"], "file": path.name})
    return rules
