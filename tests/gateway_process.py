"""`qroute serve` as a real process for tests: written config, free port, wait for /healthz, stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from simulator.harness import free_port
from tests.conftest import ADMIN_KEY


@contextmanager
def gateway_process(tmp_path: Path, cfg: dict[str, Any], args: tuple[str, ...] = (),
                    env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """Serve `cfg` on a free port and yield the base URL once /healthz answers. Output goes to `log`
    (default: gateway-PORT.log in tmp_path), never to a pipe nobody reads, so a chatty process cannot
    block on a full pipe; the log is shown when the process fails to start."""
    port = free_port()
    path = tmp_path / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    log = log or tmp_path / f"gateway-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    environment["QROUTE_ADMIN_KEYS"] = ADMIN_KEY
    environment.update(env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path),
                                 "--port", str(port), *args], env=environment, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
