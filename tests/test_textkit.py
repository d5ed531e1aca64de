"""The shared text layer: segmenters that own their words, a dictionary parser without side
effects, the JSON-lines reader, the token estimate; and the proof that loading a retrieval index
leaves the router's scores alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.pipeline import Retriever
from router.learned import LearnedScorer
from textkit.cjk import cjk_count
from textkit.dictionary import parse_dictionary_text, read_dictionary
from textkit.jsonl import read_jsonl
from textkit.segmenter import Segmenter
from textkit.tokens import approx_tokens

KB = Path(__file__).resolve().parent.parent / "examples" / "kb"
# Company names from examples/kb/dictionary.txt: the words an index teaches its own segmenter.
QUERY = [{"role": "user", "content": "东岭农商银行面临什么问题，启明的哪款产品能解决？"}]


def test_a_segmenter_keeps_its_words_to_itself():
    plain_before = Segmenter().cut("东岭农商银行的启明风控云")
    own = Segmenter(["东岭农商银行", "启明风控云"])
    assert own.cut("东岭农商银行的启明风控云") == ["东岭农商银行", "的", "启明风控云"]
    assert Segmenter().cut("东岭农商银行的启明风控云") == plain_before
    assert "东岭农商银行" not in plain_before


def test_dictionary_parsing_changes_no_segmenter(tmp_path):
    path = tmp_path / "dict.txt"
    path.write_text("# comment\n澜沧智造 10 nz\n\n  启明风控云\n", encoding="utf-8")
    before = Segmenter().cut("澜沧智造")
    assert read_dictionary(path) == ["澜沧智造", "启明风控云"]
    assert Segmenter().cut("澜沧智造") == before
    assert parse_dictionary_text("") == []
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        read_dictionary(tmp_path / "nope.txt")


def test_jsonl_reader_reports_bad_lines_and_keeps_line_separators_inside_strings():
    bad: list[tuple[int, str]] = []
    text = '{"a": 1}\n\nnot json\n[1, 2]\n{"t": "x\u2028y"}\n'
    rows = list(read_jsonl(text.split("\n"), lambda n, why: bad.append((n, why))))
    assert rows == [(1, {"a": 1}), (5, {"t": "x\u2028y"})]
    assert [n for n, _ in bad] == [3, 4]
    assert "not JSON" in bad[0][1] and bad[1][1] == "not a JSON object"


def test_token_estimate_and_cjk_ranges():
    assert cjk_count("abc中文㐀") == 3  # extension A counts too
    assert approx_tokens("中文abcd") == 3.0


def _score_in_a_fresh_process() -> float:
    code = ("import json, sys; from router.learned import LearnedScorer; "
            "print(LearnedScorer.from_paths().score(json.loads(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(QUERY)], capture_output=True, text=True,
                         timeout=120, check=True)
    return float(out.stdout)


def test_loading_an_index_with_a_dictionary_leaves_router_scores_alone(tmp_path):
    scorer = LearnedScorer.from_paths()
    before = scorer.score(QUERY)
    index = tmp_path / "kb"
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "index", "build", "--input", str(KB / "docs"),
                          str(KB / "records.jsonl"), "--dictionary", str(KB / "dictionary.txt"), "--index",
                          str(index), "--quiet"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    retriever = Retriever.open(index, mode="bm25")
    assert "东岭农商银行" in retriever.tokenize(QUERY[0]["content"])  # the index did learn its words
    assert scorer.score(QUERY) == before
    assert LearnedScorer.from_paths().score(QUERY) == before  # a scorer made after the index, too
    # ... and equal to a process that never loaded anything: no earlier test, in any order, moved it.
    assert _score_in_a_fresh_process() == pytest.approx(before, abs=1e-12)


def test_router_domain_terms_are_the_routers_own(tmp_path):
    path = tmp_path / "router-terms.txt"
    path.write_text("东岭农商银行\n", encoding="utf-8")
    with_terms = LearnedScorer.from_paths(dictionary=path)
    plain = LearnedScorer.from_paths()
    assert with_terms.score(QUERY) != plain.score(QUERY)  # the domain_terms feature and segmentation
    assert plain.score(QUERY) == LearnedScorer.from_paths().score(QUERY)
