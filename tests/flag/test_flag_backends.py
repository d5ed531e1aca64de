"""The FlagEmbedding code paths (bge-m3 embedder, bge-reranker-v2-m3 reranker) for real, on tiny
random-weight XLM-R models built by tests/flag/build_tiny_xlmr.py. Run by `make test-flag`,
which installs torch (CPU) and FlagEmbedding in .venv-flag; skipped elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

MODELS = os.environ.get("QROUTE_TINY_MODELS")
pytestmark = pytest.mark.skipif(not MODELS, reason="needs FlagEmbedding and tiny models: run `make test-flag`")


@pytest.fixture(scope="module")
def models() -> Path:
    return Path(MODELS)


def test_bge_m3_embedder_loads_from_a_local_path(models):
    from retrieval.dense import BgeM3Embedder

    embedder = BgeM3Embedder(models / "bge-m3")
    passages = embedder.encode_passages(["华东精工生产精密数控机床。", "南方银行提供供应链金融服务。"])
    query = embedder.encode_queries(["数控机床"])
    assert passages.shape == (2, 32) and query.shape == (1, 32)
    assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    assert np.allclose(embedder.encode_passages(["华东精工生产精密数控机床。"])[0], passages[0], atol=1e-5)


def test_flag_reranker_scores_each_passage(models):
    from retrieval.rerank import FlagRerankerModel

    scores = FlagRerankerModel(models / "reranker").scores("数控机床", ["华东精工生产数控机床", "南方银行", "x"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert FlagRerankerModel(models / "reranker").scores("q", []) == []


def test_missing_paths_fail_fast_naming_the_path(tmp_path):
    from retrieval.dense import BgeM3Embedder
    from retrieval.rerank import FlagRerankerModel

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        BgeM3Embedder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gone")):
        FlagRerankerModel(tmp_path / "gone")


def test_index_with_bge_m3_and_reranker(models, tmp_path):
    from retrieval.documents import Document
    from retrieval.index import IndexConfig, IndexData, chunk_documents, embed_chunks, write_index
    from retrieval.pipeline import Retriever
    from retrieval.segment import SearchTokenizer
    from retrieval.specs import BgeM3Spec, BgeRerankerSpec, build_embedder

    config = IndexConfig(embedder=BgeM3Spec(model_path=str(models / "bge-m3")),
                         reranker=BgeRerankerSpec(model_path=str(models / "reranker")))
    docs = [Document("a", "华东精工生产精密数控机床，总部在苏州。", "华东精工"),
            Document("b", "南方银行提供供应链金融服务。", "南方银行")]
    chunks, terms, ids = chunk_documents(docs)
    embeddings = embed_chunks(build_embedder(config.embedder), chunks)
    tokenize = SearchTokenizer(terms)
    write_index(tmp_path / "idx", IndexData(config, chunks, [tokenize(c.text) for c in chunks], embeddings, terms, ids))
    retriever = Retriever.open(tmp_path / "idx")
    assert retriever.embedder is not None and retriever.reranker is not None
    assert retriever.embedder.name == "bge-m3" and retriever.reranker.name == "bge-reranker"
    hits = retriever.search("苏州的机床", 2)
    assert {h.doc_id for h in hits} <= {"a", "b"} and hits
    assert all(0.0 <= h.score <= 1.0 for h in hits)  # reranker scores, normalised
