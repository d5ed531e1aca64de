"""Shadow labelling against the simulators, and the whole loop: live traffic is shadowed and judged,
the rows train a new router model, `route compare` and `route calibrate` check it, and a swap makes
the gateway route the kind of request the local model is weak on to the cloud, the rest local."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from router.metrics import apgr, routing_curve
from tests.conftest import ADMIN_KEY, CLIENT_KEY, config_dict, user

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
WEAK_ON = ["calculate", "计算"]  # the simulated local model is weak on multi-step maths, as good elsewhere


def _shadow(out: Path, **extra: Any) -> dict[str, Any]:
    return {"t1": 0.6, "t2": 0.8, "shadow": {"share": 1.0, "out": str(out), "max_concurrent": 64, **extra}}


def _rows(path: Path, expected: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
            if len(rows) >= expected:
                return rows
        time.sleep(0.05)
    found = path.read_text(encoding="utf-8") if path.exists() else "no file"
    raise AssertionError(f"{path}: fewer than {expected} shadow rows after {timeout} s: {found}")


def _metric(gw, name: str) -> float:
    text = gw.http.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def test_plain_and_streamed_requests_are_shadowed_after_the_answer(make_gateway, local_sim, cloud_sim, tmp_path):
    out = tmp_path / "shadow.jsonl"
    gw = make_gateway(router=_shadow(out))
    local_sim[0].behaviour.weak_on = WEAK_ON
    plain = gw.client.chat.completions.with_raw_response.create(
        model="auto", messages=user("Calculate 17 * 23, then add 5."))
    answer = plain.parse().choices[0].message.content
    assert answer.startswith("Unsure:") == (plain.headers["x-qroute-route"] != "cloud")  # the client's own answer
    stream = gw.client.chat.completions.create(model="auto", messages=user("What is the capital of France?"),
                                              stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed and "impartial" not in streamed
    rows = sorted(_rows(out, 2), key=lambda r: "Calculate" not in json.dumps(r["messages"]))
    maths, lookup = rows
    assert maths["verdict"] == "cloud" and (maths["weak"], maths["strong"]) == (0.0, 1.0)
    assert lookup["verdict"] == "tie" and (lookup["weak"], lookup["strong"]) == (1.0, 1.0)
    for row in rows:
        assert {"id", "messages", "weak", "strong", "route", "score", "local_model", "cloud_model", "judge",
                "time"} <= set(row)
        assert row["local_model"] == "Qwen/Qwen3-8B" and row["cloud_model"] == "qwen3-235b-a22b"
        assert row["judge"] == "cloud:pairwise"
    judge_prompts = [r for r in cloud_sim[0].received if "impartial judge" in json.dumps(r.get("body", r))]
    assert len(judge_prompts) == 4  # two pairs, each judged twice with the answers swapped
    assert _metric(gw, "qroute_shadow_judge_calls_total") == 4
    assert _metric(gw, 'qroute_shadow_verdicts_total{') == 2
    assert _metric(gw, "qroute_shadow_cost_cny_total") > 0  # cloud answers and judge calls are paid for


def test_hashes_only_when_messages_must_not_be_kept(make_gateway, tmp_path):
    out = tmp_path / "shadow.jsonl"
    gw = make_gateway(router=_shadow(out, store_messages=False))
    gw.client.chat.completions.create(model="auto", messages=user("a private question about salaries"))
    (row,) = _rows(out, 1)
    assert row["messages"] is None and len(row["messages_sha256"]) == 64
    assert "salaries" not in out.read_text(encoding="utf-8")
    train = subprocess.run([sys.executable, "-m", "gateway.cli", "route", "train", "--data", str(out),
                            "--out", str(tmp_path / "m.json.gz")], capture_output=True, text=True, timeout=120)
    assert train.returncode == 2 and "only a hash" in train.stderr


def test_spend_cap_skips_shadowing(make_gateway, tmp_path, cloud_sim):
    out = tmp_path / "shadow.jsonl"
    gw = make_gateway(router=_shadow(out, max_spend_cny_per_day=0))
    gw.client.chat.completions.create(model="auto", messages=user("hello"))
    time.sleep(0.3)
    assert not out.exists()
    assert _metric(gw, 'qroute_shadow_requests_total{result="skipped_budget"}') == 1


def test_a_rubric_judge_scores_each_answer(make_gateway, local_sim, tmp_path):
    out = tmp_path / "shadow.jsonl"
    gw = make_gateway(router=_shadow(out, judge={"method": "rubric"}))
    local_sim[0].behaviour.weak_on = WEAK_ON
    gw.client.chat.completions.create(model="auto", messages=user("Please calculate the compound interest."))
    (row,) = _rows(out, 1)
    assert row["verdict"] == "cloud" and row["judge"] == "cloud:rubric"


# --- the loop -----------------------------------------------------------------------------------

_NAMES = ["Li Wei", "Anna", "Zhang Min", "Omar", "Chen Jie", "Maria", "Wang Fang", "Tom"]
_THINGS = ["apples", "notebooks", "train tickets", "solar panels", "chairs", "bags of rice", "licences"]


def _maths(rng: random.Random) -> str:
    a, b, c, d = (rng.randint(2, 90) for _ in range(4))
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    return rng.choice([
        f"{name} buys {a} {thing} at {b} yuan each and returns {c} of them. Calculate what was spent.",
        f"Calculate the area left when a {a} by {b} metre room loses a {c} by {d} metre corner.",
        f"A tank holds {a * 10} litres and drains {b} litres per hour for {c} hours. Calculate what remains.",
        f"{name}有{a}个{thing}，卖出{b}个后又买进{c}个，请计算现在有多少个。",
        f"一辆车以每小时{a}公里行驶{b}小时，再以每小时{c}公里行驶{d}小时，计算总路程。",
    ])


def _other(rng: random.Random) -> str:
    name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
    return rng.choice([
        f"Write a short, friendly note to {name} thanking them for the {thing}.",
        f"Translate into French: {name} left the {thing} at the station this morning.",
        f"Summarise in one line: the meeting about {thing} moved to next Tuesday at the same room.",
        f"请帮我给{name}写一句生日祝福，提到{thing}。",
        f"把这句话翻译成英文：{name}今天早上把{thing}忘在车站了。",
        f"What is a good name for a shop that sells {thing}? Give three ideas for {name}.",
    ])


def _traffic(n: int, seed: int) -> list[tuple[str, bool]]:
    rng = random.Random(seed)
    return [(_maths(rng), True) if i % 2 == 0 else (_other(rng), False) for i in range(n)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_shadow_train_compare_swap_routes_the_weak_kind_to_the_cloud(make_gateway, local_sim, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("QROUTE_ADMIN_KEYS", ADMIN_KEY)
    out = tmp_path / "shadow.jsonl"
    gw = make_gateway(router=_shadow(out))
    local_sim[0].behaviour.weak_on = WEAK_ON
    live = _traffic(240, seed=1)
    for text, _ in live:
        gw.client.chat.completions.create(model="auto", messages=user(text))
    rows = _rows(out, len(live))
    assert {r["verdict"] for r in rows if "alculate" in json.dumps(r["messages"]) or "计算" in r["messages"][0]["content"]} \
        == {"cloud"}

    rng = random.Random(7)
    rng.shuffle(rows)
    cut = int(len(rows) * 0.7)
    train_file, held_file, sample_file = tmp_path / "train.jsonl", tmp_path / "held.jsonl", tmp_path / "sample.jsonl"
    train_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:cut]), encoding="utf-8")
    held_file.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[cut:]), encoding="utf-8")
    sample_file.write_text("\n".join(json.dumps({"messages": r["messages"]}, ensure_ascii=False) for r in rows[cut:]),
                           encoding="utf-8")
    model = tmp_path / "learned.json.gz"
    _cli("route", "train", "--data", str(train_file), "--out", str(model))
    compared = json.loads(_cli("route", "compare", "--new", str(model), "--data", str(held_file), "--json").stdout)
    old, new = compared["models"]["old"], compared["models"]["new"]
    held = rows[cut:]
    weak, strong = np.array([r["weak"] for r in held]), np.array([r["strong"] for r in held])
    oracle = apgr(routing_curve(strong - weak, weak, strong))  # the best any router could do on these rows
    assert new["apgr"] >= 0.9 * oracle and new["apgr"] > old["apgr"] + 0.05, (oracle, compared)
    share = sum(r["verdict"] == "cloud" for r in rows[cut:]) / len(rows[cut:])
    t = json.loads(_cli("route", "calibrate", "--model", str(model), "--target-cloud-share", f"{share:.3f}",
                        "--target-think-share", "0", "--sample", str(sample_file)).stdout)

    r = gw.http.put("/admin/router/model", json={"path": str(model), "t1": t["t1"], "t2": t["t2"]}, headers=ADMIN)
    assert r.status_code == 200, r.text
    fresh = _traffic(60, seed=2)  # requests neither training nor calibration saw
    right = 0
    for text, is_maths in fresh:
        raw = gw.client.chat.completions.with_raw_response.create(model="auto", messages=user(text))
        right += (raw.headers["x-qroute-route"] == "cloud") == is_maths
    assert right / len(fresh) >= 0.9, f"{right}/{len(fresh)} routed as the judged labels say"


def test_rows_from_every_replica_land_in_redis_and_a_swap_reaches_them_all(local_sim, cloud_sim, tmp_path):
    from tests.redis_server import RedisServer, replica

    redis = RedisServer().start()
    try:
        cfg = config_dict(local_sim[1].base, cloud_sim[1].base, state_file=None, redis={"url": redis.url},
                          router=_shadow(Path("redis")) | {"state_file": None})
        cfg["router"]["shadow"]["out"] = "redis"
        config = tmp_path / "shared.yaml"
        config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        env = {"QROUTE_TEST_DASHSCOPE_KEY": "sk-test"}
        with replica(tmp_path, cfg, env) as a, replica(tmp_path, cfg, env) as b:
            for base in (a, b, a, b):
                r = httpx.post(f"{base}/v1/chat/completions", json={"model": "auto", "messages": user("hi there")},
                               headers={"authorization": f"Bearer {CLIENT_KEY}"}, timeout=10)
                assert r.status_code == 200
            exported = tmp_path / "labels.jsonl"
            deadline = time.monotonic() + 20
            while True:
                _cli("route", "labels", "--config", str(config), "--out", str(exported))
                rows = [json.loads(line) for line in exported.read_text(encoding="utf-8").splitlines()]
                if len(rows) == 4 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert len(rows) == 4 and {r["verdict"] for r in rows} == {"tie"}
            assert all(r["messages"] == user("hi there") for r in rows)

            model = tmp_path / "m.json.gz"
            rows[0]["strong"], rows[0]["weak"] = 1.0, 0.0  # one label of each kind, so there is something to learn
            rows += [dict(r, id=f"{r['id']}-{i}", messages=user(f"Prove theorem {i} step by step")) for i, r in
                     enumerate(rows * 10)]
            for row in rows[4:]:
                row["weak"], row["strong"] = 0.0, 1.0
            exported.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
            _cli("route", "train", "--data", str(exported), "--out", str(model))
            assert httpx.put(f"{a}/admin/router/model", json={"path": str(model)}, headers=ADMIN).status_code == 200
            deadline = time.monotonic() + 3
            while httpx.get(f"{b}/admin/router", headers=ADMIN).json()["model"] != str(model):
                assert time.monotonic() < deadline, "replica b did not follow the model swap"
                time.sleep(0.05)
    finally:
        redis.stop()


def test_a_shadow_request_never_takes_a_clients_slot(make_gateway, local_sim, tmp_path):
    out = tmp_path / "shadow.jsonl"
    local = {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"{local_sim[1].base}/v1",
             "max_concurrent": 1}
    # Every auto request goes to the cloud; shadowing it needs local, whose only slot is kept for clients.
    gw = make_gateway(router={**_shadow(out), "t1": 0.0, "t2": 0.0}, backends={"vllm-local": local})
    raw = gw.client.chat.completions.with_raw_response.create(model="auto", messages=user("hello"))
    assert raw.headers["x-qroute-route"] == "cloud"
    deadline = time.monotonic() + 5
    while _metric(gw, 'qroute_shadow_requests_total{result="skipped_busy"}') < 1:
        assert time.monotonic() < deadline, "the shadow request was not skipped"
        time.sleep(0.05)
    assert not out.exists() and not local_sim[0].received
