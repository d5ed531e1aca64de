"""Choosing an index's fusion: the split keeps each gold document on one side, the choice is made on
one half only, and `qroute index tune-fusion` prints (and may store) a setting the gateway accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gateway.settings import RetrievalConfig
from retrieval.index import load_index
from retrieval.pipeline import Retriever
from retrieval.specs import FusionSetting
from retrieval.tune import ndcg_at_10, split_by_group, tune

QROUTE = [sys.executable, "-m", "gateway.cli"]


def test_split_keeps_groups_whole_covers_every_query_and_is_seeded():
    groups = [f"doc{i % 7}" for i in range(40)]
    choose, judge = split_by_group(groups, seed=1)
    assert sorted([*choose, *judge]) == list(range(40))
    assert not {groups[i] for i in choose} & {groups[i] for i in judge}
    assert 12 <= len(choose) <= 28
    again = split_by_group(groups, seed=1)
    assert choose.tolist() == again[0].tolist()
    assert any(split_by_group(groups, seed=s)[0].tolist() != choose.tolist() for s in range(2, 8))


def test_ndcg():
    assert ndcg_at_10([5, 1, 2], {5}) == 1.0
    assert ndcg_at_10([1, 5], {5}) == pytest.approx(1 / np.log2(3))
    assert ndcg_at_10([1, 2], {5}) == 0.0


def _runs(n: int) -> tuple[list, list[set[int]], list[str]]:
    """BM25 ranks two wrong chunks above the right one, the dense ranker the right one first: only a
    min-max fusion weighted more than half to the dense side puts it on top."""
    runs, relevant = [], []
    for q in range(n):
        wrong, other, right = 3 * q, 3 * q + 1, 3 * q + 2  # ties go to the lower index: the wrong one
        lexical = (np.array([wrong, other, right]), np.array([10.0, 9.0, 1.0]))
        dense = (np.array([right, wrong]), np.array([0.9, 0.1]))
        runs.append((lexical, dense))
        relevant.append({right})
    return runs, relevant, [f"doc{q % 5}" for q in range(n)]


def test_tune_chooses_on_one_half_and_reports_the_other():
    result = tune(*_runs(20), seed=0)
    # Every weight above 0.5 ties on the choosing half; the tie goes to the one nearest 0.5.
    assert result.chosen == FusionSetting(method="minmax", dense_weight=0.6)
    assert result.choose_queries + result.judge_queries == 20
    assert result.judge[result.chosen.name] == 1.0 and result.judge["RRF k=60"] < 1.0
    assert result.choose["min-max, dense weight 0.4"] < result.choose[result.chosen.name]


def test_tune_refuses_what_cannot_be_split():
    runs, relevant, _ = _runs(6)
    with pytest.raises(ValueError, match="split"):
        tune(runs, relevant, ["one"] * 6)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("corpus")
    facts = {
        "suzhou.md": "# 华东精工\n华东精工总部位于苏州，主要生产精密数控机床。",
        "bank.md": "# 南方银行\n南方银行为制造企业提供供应链金融服务，合作始于2019年。",
        "logistics.md": "# 澜江物流\n澜江物流负责华东地区的大型设备运输和仓储。",
        "energy.md": "# 青禾能源\n青禾能源在内蒙古建设风电场，装机容量两百兆瓦。",
        "report.txt": "Quarterly report: revenue grew 12% and margins held steady.",
        "hiring.txt": "The company plans to hire forty engineers for its Hangzhou lab next year.",
    }
    for name, text in facts.items():
        (src / name).write_text(text, encoding="utf-8")
    out = tmp_path_factory.mktemp("idx") / "kb"
    built = subprocess.run([*QROUTE, "index", "build", "--input", str(src), "--index", str(out), "--quiet"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return out


def _queries(path: Path) -> Path:
    rows = [
        {"query": "数控机床公司在哪个城市？", "gold_doc_ids": ["suzhou.md"]},
        {"query": "哪家公司生产精密机床", "answer": "精密数控机床"},
        {"query": "谁提供供应链金融？", "gold_doc_ids": ["bank.md"]},
        {"query": "银行合作从哪一年开始", "answer": "2019年"},
        {"query": "设备运输找哪家物流公司", "gold_doc_ids": ["logistics.md"]},
        {"query": "风电场装机容量多少", "answer": "两百兆瓦"},
        {"query": "how much did revenue grow", "gold_doc_ids": ["report.txt"]},
        {"query": "how many engineers will be hired", "answer": "forty engineers"},
        {"query": "no gold at all"},
        {"query": "an answer no chunk holds", "answer": "不存在的答案"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\nnot json\n", encoding="utf-8")
    return path


def test_new_indexes_fuse_as_the_default_and_the_gateway_can_override(index):
    assert Retriever.open(index).fusion == FusionSetting(method="minmax", dense_weight=0.6)
    config = RetrievalConfig.model_validate({"index": str(index), "fusion": {"method": "rrf"}})
    assert Retriever.open(index, fusion=config.fusion).fusion.method == "rrf"
    with pytest.raises(ValueError, match="dense_weight"):
        RetrievalConfig.model_validate({"fusion": {"method": "minmax", "dense_weight": 1.5}})


def test_tune_fusion_cli_prints_a_setting_the_gateway_accepts(index, tmp_path):
    queries = _queries(tmp_path / "q.jsonl")
    out = subprocess.run([*QROUTE, "index", "tune-fusion", "--index", str(index), "--queries", str(queries)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["queries"]["choose"] + result["queries"]["judge"] == 8  # the three bad lines skipped
    for needle in ("line 9", "line 10", "line 11"):
        assert needle in out.stderr
    assert result["current"] == "min-max, dense weight 0.6"
    assert set(result["nDCG@10 choose"]) == set(result["nDCG@10 judge"])
    best = max(result["nDCG@10 choose"].values())
    assert result["nDCG@10 choose"][result["chosen"]] == best
    setting = RetrievalConfig.model_validate(yaml.safe_load(result["yaml"])["retrieval"]).fusion
    assert setting is not None and setting.name == result["chosen"]


def test_tune_fusion_write_stores_only_a_winner(index, tmp_path):
    queries = _queries(tmp_path / "q.jsonl")
    before = load_index(index).config
    out = subprocess.run([*QROUTE, "index", "tune-fusion", "--index", str(index), "--queries", str(queries),
                          "--write"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    after = load_index(index).config
    if result["better_than_current_on_judge"]:
        assert (after.fusion, after.dense_weight) == (result["method"], result["dense_weight"])
        assert "written" in out.stderr
    else:
        assert after == before and "not written" in out.stderr
    assert len(load_index(index).chunks) == 6  # the index itself is unchanged


def test_tune_fusion_needs_embeddings(tmp_path):
    src = tmp_path / "a.md"
    src.write_text("# A\n只有一段文字。", encoding="utf-8")
    idx = tmp_path / "idx"
    subprocess.run([*QROUTE, "index", "build", "--input", str(src), "--index", str(idx), "--embedder", "none",
                    "--quiet"], check=True, capture_output=True, timeout=120)
    out = subprocess.run([*QROUTE, "index", "tune-fusion", "--index", str(idx), "--queries",
                          str(_queries(tmp_path / "q.jsonl"))], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "nothing to fuse" in out.stderr
