"""Processes for the fuzz and soak runs: `qroute sim` and one or more `qroute serve` sharing a
config, on free loopback ports, all stopped (and restartable) from here."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from simulator.harness import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KEY = "sk-bench"
ADMIN_KEY = "sk-bench-admin"


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout_s:.0f} s")


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Stack:
    def __init__(self, workdir: Path, replicas: int = 1, sim_args: tuple[str, ...] = ("--zero-delay",),
                 config: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.sim_args = sim_args
        self.local_port, self.cloud_port = free_port(), free_port()
        self.ports = [free_port() for _ in range(replicas)]
        self.gateways: list[subprocess.Popen[bytes]] = []
        self.sim: subprocess.Popen[bytes] | None = None
        self.logs: list[Any] = []
        self.config_path = workdir / "qroute.yaml"
        self.write_config(self._config(config or {}))

    def config(self) -> dict[str, Any]:
        return dict(yaml.safe_load(self.config_path.read_text(encoding="utf-8")))

    def write_config(self, cfg: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")

    def _config(self, overrides: dict[str, Any]) -> dict[str, Any]:
        cfg = yaml.safe_load((ROOT / "deploy" / "qroute.example.yaml").read_text())
        cfg["auth"] = {"api_keys": [KEY], "api_keys_env": None, "admin_keys": [ADMIN_KEY], "admin_keys_env": None}
        cfg["server"]["log_level"] = "warning"
        cfg["router"]["state_file"] = None
        for name, port in (("vllm-local", self.local_port), ("dashscope", self.cloud_port)):
            cfg["backends"][name]["api_base"] = f"http://127.0.0.1:{port}/v1"
        for key, value in overrides.items():
            cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
        return cfg

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        out = open(self.workdir / log, "ab")
        self.logs.append(out)
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "DASHSCOPE_API_KEY": "sk-sim"})

    def start_sim(self, local: bool = True) -> None:
        """Both simulated upstreams; with local=False the local one is left to the caller (its port
        stays free here) and only the cloud is served."""
        local_port = self.local_port if local else free_port()
        self.sim = self._spawn([sys.executable, "-m", "gateway.cli", "sim", "--local-port", str(local_port),
                                "--cloud-port", str(self.cloud_port), *self.sim_args], "sim.log")
        wait_http(f"http://127.0.0.1:{local_port}/health")
        wait_http(f"http://127.0.0.1:{self.cloud_port}/health")

    def stop_sim(self) -> None:
        if self.sim is not None:
            self.sim.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sim.wait(10)
            if self.sim.poll() is None:
                self.sim.kill()
            self.sim = None

    def start(self, local_sim: bool = True) -> None:
        self.start_sim(local_sim)
        for i, port in enumerate(self.ports):
            self.gateways.append(self._spawn([sys.executable, "-m", "gateway.cli", "serve", "--config",
                                              str(self.config_path), "--port", str(port)], f"gateway-{i}.log"))
        for port in self.ports:
            wait_http(f"http://127.0.0.1:{port}/healthz")

    def stop(self) -> None:
        for proc in self.gateways:
            proc.send_signal(signal.SIGINT)
        for proc in self.gateways:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(15)
            if proc.poll() is None:
                proc.kill()
        self.stop_sim()
        for log in self.logs:
            log.close()

    def bases(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.ports]

    def sim_base(self, which: str) -> str:
        return f"http://127.0.0.1:{self.local_port if which == 'local' else self.cloud_port}"
