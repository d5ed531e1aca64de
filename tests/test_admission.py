"""Admission per backend: a bounded, prioritised queue in front of a saturated backend, and 503 with
Retry-After beyond it."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from gateway.admission import Admission, BackendOverloaded
from gateway.limits import key_id
from tests.conftest import CLIENT_KEY, user


def run(coro):
    return asyncio.run(coro)


def test_a_slot_is_granted_to_the_highest_priority_waiter_first():
    async def scenario() -> list[str]:
        admission = Admission("local", max_concurrent=1, max_queue=10, max_wait_s=5)
        await admission.acquire()
        order: list[str] = []

        async def wait(name: str, priority: int) -> None:
            await admission.acquire(priority)
            order.append(name)
            admission.release(0.01)

        tasks = [asyncio.create_task(wait(n, p)) for n, p in (("low", -1), ("normal-1", 0), ("high", 5),
                                                                ("normal-2", 0))]
        await asyncio.sleep(0.01)
        assert admission.waiting == 4 and admission.running == 1
        admission.release(0.2)
        await asyncio.gather(*tasks)
        assert admission.running == 0
        return order

    assert run(scenario()) == ["high", "normal-1", "normal-2", "low"]


def test_no_room_and_no_time_are_refused_with_a_retry_after():
    async def scenario() -> None:
        admission = Admission("local", max_concurrent=1, max_queue=1, max_wait_s=0.1)
        await admission.acquire()
        waiter = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0.01)
        with pytest.raises(BackendOverloaded) as full:  # the one queue place is taken
            await admission.acquire()
        assert full.value.status == 503 and full.value.retry_after >= 1
        with pytest.raises(BackendOverloaded, match=r"no slot within 0\.1 s"):
            await waiter
        assert admission.running == 1 and admission.waiting == 0

    run(scenario())


def test_a_cancelled_waiter_gives_its_slot_on():
    async def scenario() -> None:
        admission = Admission("local", max_concurrent=1, max_queue=5, max_wait_s=5)
        await admission.acquire()
        first = asyncio.create_task(admission.acquire())
        second = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0.01)
        first.cancel()
        admission.release(0.1)
        await asyncio.wait_for(second, 1)
        assert admission.running == 1

    run(scenario())


def test_unlimited_backends_never_wait():
    async def scenario() -> None:
        admission = Admission("cloud", max_concurrent=None, max_queue=0, max_wait_s=1)
        for _ in range(100):
            await admission.acquire()
        assert admission.expected_wait() == 0 and not admission.saturated()

    run(scenario())


def test_background_work_takes_a_slot_only_with_room_to_spare():
    async def scenario() -> None:
        admission = Admission("local", max_concurrent=2, max_queue=4, max_wait_s=5)
        assert admission.try_acquire(headroom=1) and admission.running == 1
        assert not admission.try_acquire(headroom=1)  # the last slot stays for a client
        assert admission.try_acquire() and admission.running == 2
        waiter = asyncio.create_task(admission.acquire())
        await asyncio.sleep(0.01)
        admission.release(0.1)
        await waiter
        assert not admission.try_acquire()  # full again
        assert Admission("x", None, 0, 1).try_acquire(headroom=5)  # no limit: always

    run(scenario())


def _slow_local(local_sim) -> dict:
    return {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"{local_sim[1].base}/v1",
            "max_concurrent": 1, "max_queue": 4, "max_queue_wait_s": 0.5,
            "timeouts": {"connect_s": 1, "first_token_s": 10, "idle_s": 10, "total_s": 30}}


def test_a_pinned_request_beyond_the_queue_gets_503_with_retry_after(make_gateway, local_sim):
    gw = make_gateway(backends={"vllm-local": _slow_local(local_sim)}, spill={"enabled": False})
    local_sim[0].behaviour.update({"ttft_s": 2.0})
    results: dict[str, httpx.Response] = {}

    def first() -> None:
        results["first"] = gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})

    holder = threading.Thread(target=first)
    holder.start()
    threading.Event().wait(0.3)  # the first holds the only slot
    second = gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user()})
    waiting = _metric(gw.http.get("/metrics").text, 'qroute_admission_waiting{backend="vllm-local"}')
    holder.join()
    assert results["first"].status_code == 200
    assert second.status_code == 503 and second.json()["error"]["code"] == "backend_overloaded"
    assert int(second.headers["retry-after"]) >= 1 and second.headers["x-qroute-attempts"] == "local:overloaded"
    assert waiting == 0  # the refused one left the queue
    text = gw.http.get("/metrics").text
    # The one served at once, and the refused one after its 0.5 s in the queue.
    assert _metric(text, 'qroute_admission_wait_seconds_count{backend="vllm-local"}') == 2
    assert _metric(text, 'qroute_admission_wait_seconds_sum{backend="vllm-local"}') >= 0.45
    assert _metric(text, 'qroute_requests_total{') >= 1
    assert 'outcome="overloaded"' in text


def test_an_auto_request_refused_by_a_full_local_goes_to_the_cloud(make_gateway, local_sim):
    """Spill-over turns on only once local is saturated; the request whose wait ran out before that
    is not refused either: like an upstream 503, the fallback route answers it."""
    gw = make_gateway(backends={"vllm-local": _slow_local(local_sim)}, spill={"enabled": False})
    local_sim[0].behaviour.update({"ttft_s": 2.0})
    holder = threading.Thread(target=lambda: gw.http.post("/v1/chat/completions",
                                                          json={"model": "local", "messages": user()}))
    holder.start()
    threading.Event().wait(0.3)
    second = gw.http.post("/v1/chat/completions", json={"model": "auto", "messages": user()})
    holder.join()
    assert second.status_code == 200, second.text
    assert second.headers["x-qroute-attempts"] == "local:overloaded,cloud:ok"
    assert second.headers["x-qroute-route"] == "cloud"


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


def test_the_queue_length_is_exported_while_requests_wait(make_gateway, local_sim):
    gw = make_gateway(backends={"vllm-local": {**_slow_local(local_sim), "max_queue_wait_s": 5.0}},
                      spill={"enabled": False})
    local_sim[0].behaviour.update({"ttft_s": 0.8})
    threads = [threading.Thread(target=gw.http.post, args=("/v1/chat/completions",),
                                kwargs={"json": {"model": "local", "messages": user()}}) for _ in range(3)]
    for t in threads:
        t.start()
    threading.Event().wait(0.4)  # one runs, two wait
    waiting = _metric(gw.http.get("/metrics").text, 'qroute_admission_waiting{backend="vllm-local"}')
    for t in threads:
        t.join()
    assert waiting == 2
    text = gw.http.get("/metrics").text
    assert _metric(text, 'qroute_admission_waiting{backend="vllm-local"}') == 0
    assert _metric(text, 'qroute_admission_wait_seconds_count{backend="vllm-local"}') == 3
    assert _metric(text, 'qroute_admission_wait_seconds_bucket{backend="vllm-local",le="0.0"}') == 1


def test_priorities_come_from_the_key_or_a_trusted_header(make_gateway, local_sim):
    kid = key_id(CLIENT_KEY)
    gw = make_gateway(limits={"keys": {kid: {"priority": 7}}, "priority_header_keys": [kid]})
    limiter = gw.app.state.gateway.limiter
    assert limiter.priority_for(CLIENT_KEY, None) == 7
    assert limiter.priority_for(CLIENT_KEY, "42") == 42 and limiter.priority_for(CLIENT_KEY, "900") == 100
    assert limiter.priority_for("sk-someone-else", "42") == 0  # untrusted: the header is ignored
