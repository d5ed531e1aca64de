"""`qroute serve --workers N`: real worker processes behind one port; /metrics sums them
(prometheus-client multiprocess mode), and two instances on one host keep their own counts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.scrape import parse
from tests.conftest import ADMIN_KEY, CLIENT_KEY, config_dict, free_port, user


@contextmanager
def serve(tmp_path: Path, local_base: str, cloud_base: str, workers: int) -> Iterator[str]:
    port = free_port()
    cfg = config_dict(local_base, cloud_base, state_file=str(tmp_path / f"router-state-{port}.json"))
    cfg["server"]["log_level"] = "warning"
    path = tmp_path / f"qroute-{port}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["QROUTE_ADMIN_KEYS"] = ADMIN_KEY
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port),
                             "--workers", str(workers)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.2)
        time.sleep(1.0)  # the other workers finish starting
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _count(base: str, name: str = "qroute_requests_total", **labels: str) -> float:
    samples = parse(httpx.get(f"{base}/metrics", timeout=5).text)
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _send(base: str, n: int) -> None:
    """n requests, each on a new connection, so the kernel spreads them over the workers."""
    for _ in range(n):
        with httpx.Client(timeout=5, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
            r = client.post(f"{base}/v1/chat/completions", json={"model": "local", "messages": user()})
            assert r.status_code == 200


def _per_worker(base: str, tmp_path: Path) -> list[float]:
    """Each worker's own count of answered requests, read from its file in the instance's folder."""
    port = base.rsplit(":", 1)[1]
    (folder,) = Path(tempfile.gettempdir()).glob(f"qroute-metrics-{port}-*")
    counts = []
    for db in sorted(folder.glob("counter_*.db")):
        alone = tmp_path / db.stem
        alone.mkdir()
        shutil.copy(db, alone / db.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts.append(registry.get_sample_value("qroute_requests_total", {
            "route": "local", "model": "Qwen/Qwen3-8B", "outcome": "ok", "reason": "pinned:route"}) or 0.0)
    return counts


def test_two_workers_sum_and_two_instances_stay_apart(tmp_path, local_sim, cloud_sim):
    with serve(tmp_path, local_sim[1].base, cloud_sim[1].base, workers=2) as first, \
            serve(tmp_path, local_sim[1].base, cloud_sim[1].base, workers=2) as second:
        _send(first, 40)
        per_worker = _per_worker(first, tmp_path)
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker) and sum(per_worker) == 40, per_worker
        # Every scrape, whichever worker answers it, sums both workers' counts.
        assert [_count(first, route="local", outcome="ok") for _ in range(6)] == [40.0] * 6
        _send(second, 7)
        assert _count(second, route="local", outcome="ok") == 7  # its own folder: nothing of the first
        assert _count(first, route="local", outcome="ok") == 40
        assert _count(first, "qroute_backend_in_flight", backend="vllm-local") == 0
        assert _count(first, "qroute_router_threshold", threshold="t2") == 0.7


def test_a_threshold_change_reaches_every_worker(tmp_path, local_sim, cloud_sim):
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with serve(tmp_path, local_sim[1].base, cloud_sim[1].base, workers=2) as base:
        assert httpx.put(f"{base}/admin/router", json={"t2": 0.93}, headers=admin, timeout=5).status_code == 200
        time.sleep(2.5)  # workers re-read the state file every second
        seen = set()
        for _ in range(16):  # new connections: both workers answer some
            with httpx.Client(timeout=5, headers=admin) as client:
                seen.add(client.get(f"{base}/admin/router").json()["t2"])
        assert seen == {0.93}
        assert _count(base, "qroute_router_threshold", threshold="t2") == 0.93
