"""PUT /admin/router: thresholds changed at run time, validated, logged, kept across restarts."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.limits import key_id
from tests.conftest import ADMIN_KEY, user


@pytest.fixture
def admin_gateway(make_gateway, tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_ADMIN_KEYS", ADMIN_KEY)
    state = tmp_path / "state" / "router.json"

    def make():
        return make_gateway(router={"state_file": str(state)})

    return make, state


def _put(gw, body, key=ADMIN_KEY):
    return gw.http.put("/admin/router", json=body, headers={"authorization": f"Bearer {key}"})


def test_admin_key_required(admin_gateway):
    gw = admin_gateway[0]()
    assert gw.http.put("/admin/router", json={"t2": 0.5}).status_code == 401  # the client key is not enough
    assert _put(gw, {"t2": 0.5}, key="sk-wrong").status_code == 401
    r = gw.http.get("/admin/router", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200
    assert r.json() == {"t1": 0.2, "t2": 0.7, "scorer": "learned", "model": "bundled", "shared": "state file",
                        "audit": []}


def test_no_admin_key_configured_is_403(make_gateway, monkeypatch):
    monkeypatch.delenv("QROUTE_ADMIN_KEYS", raising=False)
    gw = make_gateway(auth={"api_keys": ["sk-test-client"], "api_keys_env": None, "admin_keys_env": None})
    assert _put(gw, {"t2": 0.5}).status_code == 403


@pytest.mark.parametrize(
    ("body", "param"),
    [({"t1": 0.9, "t2": 0.2}, "t1"), ({"t2": 1.5}, "t2"), ({"t1": "high"}, "t1"), ({"t3": 0.1}, "body"),
     ({}, "body"), ({"t2": True}, "t2")],
)
def test_invalid_changes_are_400(admin_gateway, body, param):
    gw = admin_gateway[0]()
    r = _put(gw, body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_change_takes_effect_is_logged_and_survives_restart(admin_gateway, caplog):
    make, state = admin_gateway
    gw = make()
    hard = user("请分别计算两家公司2023年和2024年的净利润增长率，对比并分析原因。" * 8)
    assert gw.client.chat.completions.with_raw_response.create(model="auto", messages=hard).headers[
        "x-qroute-route"] == "cloud"
    caplog.set_level(logging.WARNING, logger="qroute.router")
    r = _put(gw, {"t1": 1.0, "t2": 1.0})
    assert r.status_code == 200 and r.json()["t2"] == 1.0
    assert f"router thresholds changed by admin key {key_id(ADMIN_KEY)}" in caplog.text
    assert ADMIN_KEY not in caplog.text and "...dmin" not in caplog.text  # its id, never a piece of the key
    audit = gw.http.get("/admin/router", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()["audit"]
    assert audit[0]["old"] == {"t1": 0.2, "t2": 0.7} and audit[0]["new"] == {"t1": 1.0, "t2": 1.0}
    assert audit[0]["admin"] == key_id(ADMIN_KEY) and audit[0]["replica"]
    raw = gw.client.chat.completions.with_raw_response.create(model="auto", messages=hard)
    assert raw.headers["x-qroute-route"] == "local"
    assert raw.headers["x-qroute-reason"] == "auto:learned:below_t1"
    assert json.loads(state.read_text()) == {"t1": 1.0, "t2": 1.0}

    restarted = make()  # same config and state file: the change is still in force
    raw = restarted.client.chat.completions.with_raw_response.create(model="auto", messages=hard)
    assert raw.headers["x-qroute-route"] == "local"


def test_single_threshold_has_no_middle_tier(admin_gateway):
    gw = admin_gateway[0]()
    assert _put(gw, {"t1": 0.5, "t2": 0.5}).status_code == 200
    routes = {gw.client.chat.completions.with_raw_response.create(model="auto", messages=user(q)).headers[
        "x-qroute-route"] for q in ("hi", "请分别计算两家公司的净利润增长率，对比并分析原因。" * 3, "What is 2+2?")}
    assert "local-think" not in routes
