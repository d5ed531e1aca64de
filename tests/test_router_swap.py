"""Swapping the router's model at run time: checked first, atomic, audited, rolled back; and
`qroute route compare` side by side."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from gateway.limits import key_id
from router.train import Labelled, train
from tests.conftest import ADMIN_KEY, user

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
EASY = user("What is the capital of France?")


@pytest.fixture
def admin_env(monkeypatch):
    monkeypatch.setenv("QROUTE_ADMIN_KEYS", ADMIN_KEY)


@pytest.fixture(scope="module")
def inverted_model(tmp_path_factory) -> str:
    """A model trained to think lookups are hard and analyses easy: it routes EASY to the cloud."""
    hard = ["What is the capital of France?", "Who wrote Hamlet?", "公司电话是多少？"]
    easy = ["Prove the theorem and derive the bound step by step with numbers 3, 5 and 7.",
            "请分别计算两家公司的净利润并对比分析原因。", "Compute the integral of x^2 from 0 to 3 and explain."]
    messages, weak, strong = [], [], []
    for i in range(120):
        text = (hard if i % 2 == 0 else easy)[i % 3] + f" #{i}"
        messages.append(user(text))
        weak.append(0.0 if i % 2 == 0 else 1.0)
        strong.append(1.0)
    model = train(Labelled([str(i) for i in range(120)], messages, np.array(weak), np.array(strong),
                           np.zeros(120, int)), max_ngrams=500)
    path = tmp_path_factory.mktemp("models") / "inverted.json.gz"
    model.save(path)
    return str(path)


def _route(gw) -> str:
    return gw.client.chat.completions.with_raw_response.create(model="auto", messages=EASY).headers["x-qroute-route"]


def test_swap_then_rollback(make_gateway, admin_env, inverted_model):
    gw = make_gateway()
    assert _route(gw) == "local"
    r = gw.http.put("/admin/router/model", json={"path": inverted_model}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == inverted_model and r.json()["previous"] == "bundled"
    assert _route(gw) == "cloud"  # the new model took over at once
    audit = r.json()["audit"][0]
    assert audit["kind"] == "model" and audit["new"] == inverted_model and audit["admin"] == key_id(ADMIN_KEY)
    r = gw.http.post("/admin/router/rollback", headers=ADMIN)
    assert r.status_code == 200 and r.json()["model"] == "bundled"
    assert _route(gw) == "local"
    assert gw.http.get("/admin/router", headers=ADMIN).json()["audit"][0]["kind"] == "rollback"


def test_swap_with_thresholds_and_rollback_restores_both(make_gateway, admin_env, inverted_model):
    gw = make_gateway()
    before = gw.http.get("/admin/router", headers=ADMIN).json()
    r = gw.http.put("/admin/router/model", json={"path": inverted_model, "t1": 0.97, "t2": 0.98}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert (r.json()["t1"], r.json()["t2"], r.json()["model"]) == (0.97, 0.98, inverted_model)
    back = gw.http.post("/admin/router/rollback", headers=ADMIN).json()
    assert (back["t1"], back["t2"], back["model"]) == (before["t1"], before["t2"], "bundled")
    again = gw.http.post("/admin/router/rollback", headers=ADMIN).json()  # undoes the rollback, thresholds too
    assert (again["t1"], again["t2"], again["model"]) == (0.97, 0.98, inverted_model)
    assert gw.http.post("/admin/router/rollback", headers=ADMIN).json()["model"] == "bundled"
    r = gw.http.put("/admin/router/model", json={"path": inverted_model, "t1": 0.9, "t2": 0.1}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] in ("t1", "t2")
    assert gw.http.get("/admin/router", headers=ADMIN).json()["model"] == "bundled"  # refused: nothing changed


def test_bad_model_files_are_refused_and_nothing_changes(make_gateway, admin_env, tmp_path):
    gw = make_gateway()
    not_a_model = tmp_path / "bad.json.gz"
    with gzip.open(not_a_model, "wt") as fh:
        fh.write('{"format": "something-else"}')
    for body, needle in (({"path": str(tmp_path / "none.json.gz")}, "no model file"),
                         ({"path": str(not_a_model)}, "not a usable"),
                         ({"path": ""}, "path"), ({"model": "x"}, "path")):
        r = gw.http.put("/admin/router/model", json=body, headers=ADMIN)
        assert r.status_code == 400 and needle in r.json()["error"]["message"] + r.json()["error"]["param"], r.text
    assert gw.http.get("/admin/router", headers=ADMIN).json()["model"] == "bundled"
    assert gw.http.post("/admin/router/rollback", headers=ADMIN).status_code == 409
    assert gw.http.put("/admin/router/model", json={"path": "x"}).status_code == 401  # client key: no


def test_compare_prints_both_models_side_by_side(inverted_model, tmp_path):
    rows = []
    for i in range(60):
        hard = i % 2 == 0
        text = ("请分别计算两家公司2023年和2024年的净利润增长率，对比并分析原因。" if hard else "What is the capital of France?")
        rows.append({"id": i, "messages": user(f"{text} {i}"), "weak": 0 if hard else 1, "strong": 1})
    data = tmp_path / "held.jsonl"
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    # Thresholds at which the bundled model sends some of these short requests to the cloud (at the
    # defaults it sends none, and no model could recover anything at a cloud share of 0).
    cfg = yaml.safe_load(open("deploy/qroute.demo.yaml"))
    cfg["router"].update(t1=0.03, t2=0.03, state_file=None)
    config = tmp_path / "q.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "route", "compare", "--new", inverted_model,
                          "--data", str(data), "--config", str(config), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["requests"] == 60
    old, new = result["models"]["old"], result["models"]["new"]
    assert old["path"] == "CURRENT" and old["apgr"] > 0.6 and new["apgr"] < 0.4  # the inverted one routes backwards
    assert set(old) == {"path", "apgr", "cpt50", "cpt80", "cloud_share", "gap_recovered_at_old_share"}
    assert 0 < old["cloud_share"] < 1
    assert old["gap_recovered_at_old_share"] > new["gap_recovered_at_old_share"]
    matched = result["new_thresholds"]
    assert 0 <= matched["t1"] <= matched["t2"] <= 1
    text = subprocess.run([sys.executable, "-m", "gateway.cli", "route", "compare", "--new", inverted_model,
                           "--data", str(data)], capture_output=True, text=True, timeout=120)
    assert "APGR" in text.stdout and "new - old APGR" in text.stdout


def test_a_relative_model_path_is_shared_as_an_absolute_one(make_gateway, admin_env, inverted_model, monkeypatch):
    """Replicas may run in other directories: the path shared and shown is absolute."""
    from pathlib import Path

    monkeypatch.chdir(Path(inverted_model).parent)
    gw = make_gateway()
    r = gw.http.put("/admin/router/model", json={"path": Path(inverted_model).name}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == inverted_model and r.json()["audit"][0]["new"] == inverted_model
