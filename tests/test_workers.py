"""`qroute serve --workers N`: real worker processes behind one port; /metrics sums them
(prometheus-client multiprocess mode), and two instances on one host keep their own counts."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.scrape import parse
from tests.conftest import ADMIN_KEY, CLIENT_KEY, config_dict, user
from tests.gateway_process import gateway_process


@contextmanager
def serve(tmp_path: Path, local_base: str, cloud_base: str, workers: int, **overrides: Any) -> Iterator[str]:
    cfg = config_dict(local_base, cloud_base, state_file=str(tmp_path / f"router-state-{uuid.uuid4().hex}.json"),
                      **overrides)
    cfg["server"]["log_level"] = "warning"
    with gateway_process(tmp_path, cfg, args=("--workers", str(workers))) as base:
        time.sleep(1.0)  # the other workers finish starting
        yield base


def _count(base: str, name: str = "qroute_requests_total", **labels: str) -> float:
    samples = parse(httpx.get(f"{base}/metrics", timeout=5).text)
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _send(base: str, n: int) -> None:
    """n requests, each on a new connection, four at a time: a worker busy with one leaves the next
    connection to the other, so the kernel spreads them over the workers."""

    def one(_: int) -> int:
        with httpx.Client(timeout=5, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
            return client.post(f"{base}/v1/chat/completions", json={"model": "local", "messages": user()}).status_code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(n))) == [200] * n


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


def test_workers_share_a_backends_admission_limit(tmp_path, local_sim, cloud_sim):
    """max_concurrent is the gateway's, not each worker's: two workers with max_concurrent 2 and no
    queue let at most 2 slow requests through at once (each worker admits 1); unsplit, up to 4 would."""
    base_cfg = config_dict(local_sim[1].base, cloud_sim[1].base)
    local = {**base_cfg["backends"]["vllm-local"], "max_concurrent": 2, "max_queue": 0,
             "timeouts": {"connect_s": 1, "first_token_s": 5, "idle_s": 5, "total_s": 10}}
    local_sim[0].behaviour.update({"ttft_s": 1.5})
    try:
        with serve(tmp_path, local_sim[1].base, cloud_sim[1].base, workers=2,
                   backends={**base_cfg["backends"], "vllm-local": local}, spill={"enabled": False}) as base:
            statuses: list[int] = []

            def one() -> None:
                with httpx.Client(timeout=10, headers={"authorization": f"Bearer {CLIENT_KEY}"}) as client:
                    statuses.append(client.post(f"{base}/v1/chat/completions",
                                                json={"model": "local", "messages": user()}).status_code)

            threads = [threading.Thread(target=one) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        local_sim[0].behaviour.update({"ttft_s": 0.0})
    assert 1 <= statuses.count(200) <= 2 and statuses.count(503) == 8 - statuses.count(200), statuses
