"""`qroute route score | explain | calibrate | train` as other tools drive them: processes, JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from gateway.settings import load_settings

QROUTE = [sys.executable, "-m", "gateway.cli", "route"]
SAMPLE = [
    {"id": "a", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
    {"id": "b", "messages": [{"role": "user", "content": "请分别计算两家公司2023年和2024年的净利润增长率，对比并分析原因。"}]},
    {"id": "c", "messages": []},
    {"id": 4, "messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational, then derive a bound."}]},
]


def run(args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([*QROUTE, *args], input=stdin, capture_output=True, text=True, timeout=120)


def test_score_reads_and_writes_json_lines():
    lines = "\n".join(json.dumps(r, ensure_ascii=False) for r in SAMPLE) + "\nnot json\n"
    out = run(["score"], lines)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c", 4]
    assert all(set(r) == {"id", "score", "route"} and 0 <= r["score"] <= 1 for r in rows)
    assert all(r["route"] in ("local", "local-think", "cloud") for r in rows)
    assert rows[1]["score"] > rows[0]["score"]
    assert "line 5" in out.stderr  # the bad line is reported and skipped


def test_score_uses_config_thresholds(tmp_path):
    cfg = yaml.safe_load(open("deploy/qroute.example.yaml"))
    cfg["router"].update(t1=0.0, t2=0.0)
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run(["score", "--config", str(path)], json.dumps(SAMPLE[0]) + "\n")
    assert json.loads(out.stdout)["route"] == "cloud"


def test_explain_names_what_moved_the_score():
    out = run(["explain", "某公司营收1.2亿元，增长15%，请分别计算并对比两年的毛利额，分析原因。"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("score ")
    assert "route " in out.stdout.splitlines()[0]
    assert "towards" in out.stdout and ("a short request" in out.stdout or "a long request" in out.stdout)


def test_calibrate_hits_the_share_and_writes_the_config(tmp_path):
    sample = tmp_path / "traffic.jsonl"
    texts = [f"question {i} " + "why and how " * (i % 7) + "计算 " * (i % 5) for i in range(200)]
    sample.write_text("\n".join(json.dumps({"id": i, "messages": [{"role": "user", "content": t}]})
                                for i, t in enumerate(texts)))
    config = tmp_path / "q.yaml"
    config.write_text(open("deploy/qroute.example.yaml").read())
    out = run(["calibrate", "--target-cloud-share", "0.2", "--target-think-share", "0.1", "--sample", str(sample),
               "--config", str(config), "--write"])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert abs(result["cloud_share"] - 0.2) <= 0.05 and result["requests"] == 200
    assert result["t1"] <= result["t2"]
    written = yaml.safe_load(config.read_text())["router"]
    assert written["t1"] == result["t1"] and written["t2"] == result["t2"]
    assert "# below: local" in config.read_text()  # comments kept


def test_train_writes_a_model_that_scores(tmp_path):
    data = tmp_path / "labels.jsonl"
    rows = []
    for i in range(80):
        hard = i % 2 == 0
        text = ("Derive and prove the bound, compute 3^5 and 7! step by step" if hard else "Who wrote Hamlet?")
        rows.append({"id": i, "messages": [{"role": "user", "content": f"{text} {i}"}],
                     "weak": 0 if hard else 1, "strong": 1})
    data.write_text("\n".join(json.dumps(r) for r in rows))
    model = tmp_path / "m.json.gz"
    out = run(["train", "--data", str(data), "--out", str(model), "--max-ngrams", "300"])
    assert out.returncode == 0, out.stderr
    scored = run(["score", "--model", str(model)],
                 json.dumps({"id": 1, "messages": [{"role": "user", "content": "Who wrote Hamlet?"}]}) + "\n")
    assert 0 <= json.loads(scored.stdout)["score"] <= 1


def test_train_reports_bad_data(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "messages": []}\n')
    out = run(["train", "--data", str(bad), "--out", str(tmp_path / "m.json.gz")])
    assert out.returncode == 2 and "weak" in out.stderr


BASE_YAML = open("deploy/qroute.example.yaml").read().split("router:")[0]


@pytest.mark.parametrize(
    "router_block",
    [
        "router:   # the complexity router\n  scorer: learned  # keep me\n  t1: 0.6\n  t2: 0.8\n  state_file: null\n",
        "router: {scorer: learned, t1: 0.6, t2: 0.8, state_file: null}  # flow style\n",
        "router:\n  # thresholds come last\n  state_file: null\n",
        "",
    ],
    ids=["comment-on-router-line", "flow-style", "no-thresholds-yet", "no-router-section"],
)
def test_calibrate_write_keeps_every_shape_intact(tmp_path, router_block):
    config = tmp_path / "q.yaml"
    config.write_text(BASE_YAML + router_block + "retrieval:\n  top_k: 5  # after the router\n")
    before = yaml.safe_load(config.read_text())
    sample = tmp_path / "s.jsonl"
    sample.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": "x " * i}]}) for i in range(50)))
    out = run(["calibrate", "--target-cloud-share", "0.3", "--sample", str(sample), "--config", str(config),
               "--write"])
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    text = config.read_text()
    after = yaml.safe_load(text)
    assert text.count("\nrouter:") + text.startswith("router:") == 1  # one block, never a second one
    assert after["router"]["t1"] == result["t1"] and after["router"]["t2"] == result["t2"]
    for key, value in (before.get("router") or {}).items():
        if key not in ("t1", "t2"):
            assert after["router"][key] == value  # no key dropped
    assert {k: v for k, v in after.items() if k != "router"} == {k: v for k, v in before.items() if k != "router"}
    assert "# after the router" in text and "# CNY per million tokens" in text
    if "# keep me" in router_block:
        assert "# keep me" in text and "# the complexity router" in text
    assert load_settings(config).router.t2 == result["t2"]
