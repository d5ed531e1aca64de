"""Several vLLM replicas behind the local backend: the fewest requests in flight wins, and a replica
whose /health fails is left out."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from simulator.app import SimulatedUpstream
from simulator.harness import ServerThread
from tests.conftest import ADMIN_KEY, free_port, sim_behaviour, user

_ADMIN_AUTH = {"admin_keys": [ADMIN_KEY]}  # /readyz shows replicas to the admin key only
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def _backend(*bases: str) -> dict:
    return {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": [f"{b}/v1" for b in bases],
            "timeouts": {"connect_s": 1, "first_token_s": 10, "idle_s": 10, "total_s": 30}}


def test_requests_spread_over_replicas_by_load(make_gateway, local_sim):
    second = SimulatedUpstream(sim_behaviour("vllm"))
    with ServerThread(second) as other:
        gw = make_gateway(backends={"vllm-local": _backend(local_sim[1].base, other.base)}, auth=_ADMIN_AUTH)
        for sim in (local_sim[0], second):
            sim.behaviour.update({"ttft_s": 0.2})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: gw.client.chat.completions.create(model="local", messages=user()), range(16)))
        a, b = local_sim[0].stats["completed"], second.stats["completed"]
        assert a + b == 16 and min(a, b) >= 5, (a, b)  # both served a fair share
        ready = gw.http.get("/readyz", headers=ADMIN).json()["upstreams"]["vllm-local"]
        assert len(ready["replicas"]) == 2 and all(r["healthy"] for r in ready["replicas"])


def test_a_replica_whose_health_fails_is_left_out(make_gateway, local_sim, cloud_sim):
    dead = f"http://127.0.0.1:{free_port()}"
    gw = make_gateway(backends={"vllm-local": _backend(dead, local_sim[1].base)}, auth=_ADMIN_AUTH)
    time.sleep(0.5)  # the first health round has run
    raws = [gw.client.chat.completions.with_raw_response.create(model="local", messages=user()) for _ in range(6)]
    assert all(r.headers["x-qroute-attempts"] == "local:ok" for r in raws)  # never sent to the dead one
    assert cloud_sim[0].stats["requests"] == 0
    ready = gw.http.get("/readyz", headers=ADMIN).json()["upstreams"]["vllm-local"]
    assert [r["healthy"] for r in ready["replicas"]] == [False, True]
