"""Spill-over: `auto` traffic for a saturated local backend goes to the cloud (auto:spill) and comes
back when the load drops; pinned routes never move; a stale vLLM /metrics breaks nothing; caps hold."""

from __future__ import annotations

import threading
import time

import httpx

from gateway.settings import SpillConfig
from gateway.spill import SpillController, parse_vllm_metrics
from tests.conftest import free_port, user

EASY = user("What is the capital of France?")  # scores far below t1: auto sends it local


def _local(local_sim, **extra) -> dict:
    return {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"{local_sim[1].base}/v1",
            "timeouts": {"connect_s": 1, "first_token_s": 10, "idle_s": 10, "total_s": 30}, **extra}


def _route(gw, model: str = "auto") -> tuple[str, str]:
    r = gw.client.chat.completions.with_raw_response.create(model=model, messages=EASY)
    return r.headers["x-qroute-route"], r.headers["x-qroute-reason"]


def _until(check, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_parse_vllm_metrics_sums_models_and_engines():
    text = ('# TYPE vllm:num_requests_waiting gauge\n'
            'vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-8B"} 3.0\n'
            'vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-8B"} 2.0\n'
            '# TYPE vllm:num_requests_running gauge\n'
            'vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-8B"} 4.0\n'
            '# TYPE vllm:kv_cache_usage_perc gauge\n'
            'vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-8B"} 0.61\n')
    load = parse_vllm_metrics(text)
    assert (load.waiting, load.running, load.kv_cache_usage) == (5.0, 4.0, 0.61)


def test_a_vllm_queue_spills_auto_traffic_and_it_comes_back(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(spill={"max_waiting": 4, "resume_waiting": 1, "poll_s": 0.5, "cooldown_s": 1.0})
    assert _route(gw) == ("local", "auto:learned:below_t1")
    local_sim[0].behaviour.update({"waiting_requests": 9})  # vLLM reports a queue of 9
    _until(lambda: _route(gw)[1] == "auto:spill")
    assert _route(gw) == ("cloud", "auto:spill")
    assert _route(gw, "local")[0] == "local"  # pinned: never moved
    metrics = httpx.get(f"{gw.base}/metrics").text
    assert 'qroute_spill_active{backend="vllm-local"} 1.0' in metrics
    assert 'qroute_spilled_total{from_route="local"}' in metrics
    local_sim[0].behaviour.update({"waiting_requests": 3})  # below max_waiting, above resume_waiting
    time.sleep(1.6)
    assert _route(gw)[1] == "auto:spill"  # hysteresis: still spilling
    local_sim[0].behaviour.update({"waiting_requests": 0})
    _until(lambda: _route(gw)[0] == "local")
    assert 'qroute_spill_active{backend="vllm-local"} 0.0' in httpx.get(f"{gw.base}/metrics").text


def test_spilling_ends_without_traffic(make_gateway, local_sim, cloud_sim):
    """Once the queue clears, spilling ends by itself: the gauge says so with no request asking, and
    the first request after a quiet spell goes local."""
    gw = make_gateway(spill={"max_waiting": 4, "resume_waiting": 1, "poll_s": 0.5, "cooldown_s": 1.0})
    local_sim[0].behaviour.update({"waiting_requests": 9})
    _until(lambda: _route(gw)[1] == "auto:spill")
    local_sim[0].behaviour.update({"waiting_requests": 0})
    _until(lambda: 'qroute_spill_active{backend="vllm-local"} 0.0' in httpx.get(f"{gw.base}/metrics").text)
    assert _route(gw) == ("local", "auto:learned:below_t1")


def test_concurrency_beyond_the_limit_spills_and_comes_back(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(backends={"vllm-local": _local(local_sim, max_concurrent=1, max_queue_wait_s=0.5)},
                      spill={"cooldown_s": 0.5, "poll_s": 0.5})
    local_sim[0].behaviour.update({"ttft_s": 1.5})  # local made slow
    held = threading.Thread(target=lambda: _route(gw, "local"))
    held.start()
    time.sleep(0.3)  # one slow request holds local's only slot
    assert _route(gw) == ("cloud", "auto:spill")
    held.join()
    local_sim[0].behaviour.update({"ttft_s": 0.0})
    _until(lambda: _route(gw)[0] == "local")


def test_a_429_from_local_spills_for_the_cooldown(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(spill={"cooldown_s": 1.0})
    local_sim[0].behaviour.update({"fail_next": 1, "error_status": 429})
    assert _route(gw)[0] == "cloud"  # the 429 itself fell back
    assert _route(gw) == ("cloud", "auto:spill")
    _until(lambda: _route(gw)[0] == "local", timeout_s=5)


def test_an_unreachable_metrics_endpoint_breaks_nothing(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(backends={"vllm-local": _local(local_sim, metrics_url=f"http://127.0.0.1:{free_port()}/metrics")},
                      spill={"poll_s": 0.5})
    time.sleep(1.2)
    assert _route(gw) == ("local", "auto:learned:below_t1")
    assert gw.http.get("/readyz").status_code == 200


def test_caps_stop_spilling(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(spill={"poll_s": 0.5, "max_cloud_share": 0.0})
    local_sim[0].behaviour.update({"waiting_requests": 9})
    time.sleep(1.2)
    assert _route(gw) == ("local", "auto:learned:below_t1")  # the cap: no cloud share at all


def test_spill_can_be_turned_off(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(spill={"enabled": False})
    local_sim[0].behaviour.update({"waiting_requests": 9})
    time.sleep(0.5)
    assert _route(gw)[0] == "local"


def test_a_spend_cap_stops_spilling_once_spilled_requests_cost_it(make_gateway, local_sim, cloud_sim):
    gw = make_gateway(spill={"poll_s": 0.5, "max_spend_cny_per_hour": 0.0001})  # one cloud answer costs more
    local_sim[0].behaviour.update({"waiting_requests": 9})
    _until(lambda: _route(gw)[1] == "auto:spill")
    time.sleep(0.2)  # the spilled answer's cost is recorded once it has been sent
    assert _route(gw) == ("local", "auto:learned:below_t1")


def test_decisions_outside_the_window_are_forgotten_while_local_never_saturates():
    """Every auto decision is recorded; a local that never saturates never reads the caps, and still
    only the window's decisions are kept (a soak's RSS kept growing with every request before)."""
    now = [0.0]
    spill = SpillController(SpillConfig(window_s=10, max_cloud_share=0.5, max_spend_cny_per_hour=1.0), {},
                            on_change=lambda backend, active: None, clock=lambda: now[0])
    for i in range(10_000):
        now[0] = i * 0.01  # 100 decisions a second for 100 s, one in four to the cloud
        spill.record_decision(i % 4 == 0)
    assert len(spill._caps.decisions) <= 1001
    assert spill._caps.cloud == sum(cloud for _, cloud in spill._caps.decisions)
    assert spill.allowed()  # a quarter of the window went to the cloud: under the share cap
    for _ in range(3):
        spill.record_spend(0.4)
    assert not spill.allowed()  # 1.2 CNY this hour: over the spend cap
    now[0] += 3601
    spill.record_spend(0.1)
    for _ in range(3):
        spill.record_decision(False)
    assert spill.allowed() and len(spill._caps.spend) == 1 and len(spill._caps.decisions) == 3
