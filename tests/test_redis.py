"""Shared state across replicas in a real Redis: two gateway processes on one redis-server share
thresholds (with an audit trail), per-key limits and budgets, and cached answers."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.limits import key_id
from tests.conftest import ADMIN_KEY, CLIENT_KEY, config_dict, user
from tests.redis_server import RedisServer, replica

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CLIENT = {"authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def shared_config(local_sim, cloud_sim, redis: RedisServer, tmp_path: Path, **overrides) -> dict:
    cfg = config_dict(local_sim[1].base, cloud_sim[1].base, state_file=None, redis={"url": redis.url}, **overrides)
    cfg["server"]["log_level"] = "warning"
    return cfg


def chat(base: str, **body) -> httpx.Response:
    return httpx.post(f"{base}/v1/chat/completions", json={"model": "local", "messages": user(), **body},
                      headers=CLIENT, timeout=10)


def test_a_threshold_change_reaches_the_other_replica_within_a_second(local_sim, cloud_sim, redis, tmp_path):
    cfg = shared_config(local_sim, cloud_sim, redis, tmp_path)
    with replica(tmp_path, cfg) as a, replica(tmp_path, cfg) as b:
        assert httpx.get(f"{b}/admin/router", headers=ADMIN).json()["shared"] == "redis"
        changed = time.monotonic()
        assert httpx.put(f"{a}/admin/router", json={"t2": 0.91}, headers=ADMIN).status_code == 200
        while httpx.get(f"{b}/admin/router", headers=ADMIN).json()["t2"] != 0.91:
            assert time.monotonic() - changed < 1.0, "replica b did not follow within 1 s"
            time.sleep(0.02)
        audit = httpx.get(f"{b}/admin/router", headers=ADMIN).json()["audit"]
        assert audit[0]["new"]["t2"] == 0.91 and audit[0]["old"]["t2"] == 0.7
        assert audit[0]["admin"] == key_id(ADMIN_KEY) and audit[0]["replica"]
        # A replica started later takes the shared value, not its YAML's.
        with replica(tmp_path, cfg) as c:
            assert httpx.get(f"{c}/admin/router", headers=ADMIN).json()["t2"] == 0.91


def test_an_rpm_limit_holds_across_replicas(local_sim, cloud_sim, redis, tmp_path):
    cfg = shared_config(local_sim, cloud_sim, redis, tmp_path,
                        limits={"keys": {key_id(CLIENT_KEY): {"rpm": 5}}})
    with replica(tmp_path, cfg) as a, replica(tmp_path, cfg) as b:
        codes = [chat(base).status_code for base in (a, b, a, b, a)]
        assert codes == [200] * 5
        for base in (a, b):  # the sixth and seventh, whichever replica takes them
            r = chat(base)
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
            assert 1 <= int(r.headers["retry-after"]) <= 60
    assert CLIENT_KEY.encode() not in redis.command("KEYS", "*")  # stored by id only
    assert key_id(CLIENT_KEY).encode() in redis.command("KEYS", "*")


def test_a_daily_budget_holds_across_replicas(local_sim, cloud_sim, redis, tmp_path):
    # A cloud answer here costs about 0.0004 CNY: the budget admits two, then refuses.
    cfg = shared_config(local_sim, cloud_sim, redis, tmp_path,
                        limits={"keys": {key_id(CLIENT_KEY): {"budget_cny_per_day": 0.0007}}})
    with replica(tmp_path, cfg) as a, replica(tmp_path, cfg) as b:
        assert chat(a, model="cloud").status_code == 200
        time.sleep(0.3)  # spend is settled just after the answer
        assert chat(b, model="cloud").status_code == 200
        time.sleep(0.3)
        for base in (a, b):
            r = chat(base, model="cloud")
            assert r.status_code == 429 and "daily budget" in r.json()["error"]["message"]


def test_a_cached_answer_from_one_replica_is_a_hit_on_the_other(local_sim, cloud_sim, redis, tmp_path):
    cfg = shared_config(local_sim, cloud_sim, redis, tmp_path, cache={"enabled": True, "ttl_s": 60})
    with replica(tmp_path, cfg) as a, replica(tmp_path, cfg) as b:
        first = chat(a, temperature=0)
        assert first.status_code == 200 and first.headers["x-qroute-cache"] == "miss"
        served = local_sim[0].stats["completed"]
        deadline = time.monotonic() + 5
        while True:
            second = chat(b, temperature=0)
            if second.headers["x-qroute-cache"] == "hit" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert second.headers["x-qroute-cache"] == "hit"
        assert second.json()["choices"] == first.json()["choices"]
        assert second.json()["usage"]["qroute_cost_cny"] == 0.0
        assert local_sim[0].stats["completed"] == served  # the hit never reached the upstream
        assert "x-qroute-cache" not in chat(b, temperature=0.7).headers  # not deterministic: not cached
        assert chat(b, temperature=0, cache={"no-cache": True}).headers["x-qroute-cache"] == "miss"
        metrics = httpx.get(f"{b}/metrics").text
        assert 'qroute_cache_lookups_total{result="hit"}' in metrics


def test_start_and_serve_without_redis_then_share_when_it_comes(local_sim, cloud_sim, tmp_path):
    dead = RedisServer()  # a port where nothing listens yet
    cfg = config_dict(local_sim[1].base, cloud_sim[1].base, state_file=None,
                      redis={"url": dead.url}, limits={"keys": {key_id(CLIENT_KEY): {"rpm": 3}}})
    cfg["server"]["log_level"] = "warning"
    with replica(tmp_path, cfg) as a:
        started = time.monotonic()
        assert [chat(a).status_code for _ in range(3)] == [200] * 3
        assert chat(a).status_code == 429  # the limit still holds, on this process's own counters
        assert time.monotonic() - started < 5
        assert "qroute_redis_up 0.0" in httpx.get(f"{a}/metrics").text
        dead.start()
        try:
            deadline = time.monotonic() + 10
            while "qroute_redis_up 1.0" not in httpx.get(f"{a}/metrics").text:
                chat(a)  # calls let the breaker probe Redis again
                assert time.monotonic() < deadline, "did not recover when Redis came"
                time.sleep(0.3)
        finally:
            dead.stop()


def test_a_response_stored_on_one_replica_continues_on_the_other(local_sim, cloud_sim, redis, tmp_path):
    cfg = shared_config(local_sim, cloud_sim, redis, tmp_path)
    with replica(tmp_path, cfg) as a, replica(tmp_path, cfg) as b:
        first = httpx.post(f"{a}/v1/responses", json={"model": "local", "input": "Remember: the code is 7319."},
                           headers=CLIENT, timeout=10).json()
        second = httpx.post(f"{b}/v1/responses", json={"model": "local", "input": "What was the code?",
                                                       "previous_response_id": first["id"]},
                            headers=CLIENT, timeout=10)
        assert second.status_code == 200, second.text
        sent = local_sim[0].received[-1]["body"]["messages"]
        assert any("7319" in str(m.get("content")) for m in sent)  # b had a's turn from Redis
        assert httpx.get(f"{b}/v1/responses/{first['id']}", headers=CLIENT).status_code == 200


def test_replicas_agree_again_after_redis_restarts_empty(local_sim, cloud_sim, redis, tmp_path):
    """Redis without persistence comes back empty: the replicas that outlived it write their settings
    back (the first wins whole), so one started afterwards takes those, not its YAML's."""
    cfg = shared_config(local_sim, cloud_sim, redis, tmp_path)
    with replica(tmp_path, cfg) as a, replica(tmp_path, cfg) as b:
        assert httpx.put(f"{a}/admin/router", json={"t1": 0.55, "t2": 0.75}, headers=ADMIN).json()["shared"] == "redis"
        redis.kill()
        # Changed while Redis is down: applied where it was made, and the answer says so.
        assert httpx.put(f"{b}/admin/router", json={"t2": 0.76}, headers=ADMIN).json()["shared"] == "here only"
        assert httpx.put(f"{b}/admin/router", json={"t2": 0.75}, headers=ADMIN).status_code == 200
        redis.start()  # same port, empty
        deadline = time.monotonic() + 10
        while b"t2" not in redis.command("HGETALL", "qroute:router:current"):
            assert time.monotonic() < deadline, "no replica wrote its settings back to the empty Redis"
            time.sleep(0.2)
        assert b"0.75" in redis.command("HGET", "qroute:router:current", "t2")
        with replica(tmp_path, cfg) as c:
            assert (httpx.get(f"{c}/admin/router", headers=ADMIN).json()["t1"]) == 0.55


def test_far_from_its_limits_a_key_is_admitted_without_waiting_and_a_miss_without_a_read(local_sim, cloud_sim, redis,
                                                                                        tmp_path):
    """Generous limits and the cache on: once a replica has heard the key's usage from Redis, requests
    are admitted on that view and recorded in Redis just after, and misses are known from the index
    of stored answers; Redis still counts every request."""
    generous = {"rpm": 10_000, "tpm": 10**8, "concurrent": 1_000, "budget_cny_per_day": 1_000}
    cfg = shared_config(local_sim, cloud_sim, redis, tmp_path, limits={"keys": {key_id(CLIENT_KEY): generous}},
                        cache={"enabled": True, "ttl_s": 60})
    with replica(tmp_path, cfg) as a:
        for n in range(12):
            assert chat(a, temperature=0, seed=n).headers["x-qroute-cache"] == "miss"
            time.sleep(0.02)  # the write-behind flush brings a fresh view
        metrics = httpx.get(f"{a}/metrics").text
    admitted = {kind: float(value) for kind, value in
                re.findall(r'qroute_limit_admissions_total\{decided="(\w+)"\} ([\d.e+]+)', metrics)}
    assert admitted["view"] >= 8 and admitted["redis"] >= 1 and admitted["process"] == 0, admitted
    index_misses = float(re.search(r"qroute_cache_index_misses_total ([\d.e+]+)", metrics).group(1))
    assert index_misses >= 8
    assert re.match(rb":12\b", redis.command("ZCARD", f"qroute:lim:{{{key_id(CLIENT_KEY)}}}:rpm"))
