"""Retrieval-augmented requests: the same grounded context for every route.

Asked for per request (`"rag": true` in the body, or header `x-qroute-rag: on`), or by default for
listed client keys. The index is opened once at start-up; the search (jieba, BM25, embedding a
query) runs in a worker thread so the event loop never waits on it. Retrieval's own errors are
translated here into OpenAI-shaped ones: a request that asked for grounding is never answered
without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest, RetrievalFailed, RetrievalUnavailable
from gateway.protocol import RetrievalInfo, Source
from gateway.settings import RetrievalConfig
from retrieval.errors import BackendUnavailable, RetrievalError
from retrieval.pipeline import Retriever, assemble_context
from textkit.conversation import read_conversation

log = logging.getLogger("qroute.rag")

_ON = ("on", "true", "1", "yes")
_OFF = ("off", "false", "0", "no")


@dataclass
class Grounding:
    messages: list[dict[str, Any]]
    sources: list[Source]
    retrieval_ms: float

    def header(self) -> str:
        """ASCII-safe JSON (doc ids may be Chinese; header values must be Latin-1)."""
        listed = [{"id": s.id, "doc_id": s.doc_id} for s in self.sources]
        return orjson.dumps(listed).decode().encode("ascii", "backslashreplace").decode()

    def info(self) -> RetrievalInfo:
        return RetrievalInfo(sources=self.sources, retrieval_ms=round(self.retrieval_ms, 2))


class RagService:
    def __init__(self, config: RetrievalConfig, default_keys: frozenset[str],
                 secrets: Callable[[str], str | None]) -> None:
        self.config = config
        self.default_keys = default_keys
        self.secrets = secrets
        self.retriever: Retriever | None = None

    async def start(self) -> None:
        if self.config.index:
            self.retriever = await asyncio.to_thread(
                Retriever.open, self.config.index, embedder=self.config.embedder, reranker=self.config.reranker,
                secrets=self.secrets, fusion=self.config.fusion)
            log.warning("retrieval index %s loaded: %d chunks", self.config.index, len(self.retriever.data.chunks))

    @property
    def index_version(self) -> str | None:
        """Which build of the index answers (part of the response cache's key)."""
        return self.retriever.data.version if self.retriever is not None else None

    def wanted(self, body_flag: bool | None, header: str | None, client_key: str | None) -> bool:
        if body_flag is not None:
            return body_flag
        if header:
            value = header.strip().lower()
            if value in _ON:
                return True
            if value in _OFF:
                return False
            raise InvalidRequest("x-qroute-rag must be 'on' or 'off'.", param="x-qroute-rag")
        return self.config.default or (client_key is not None and client_key in self.default_keys)

    async def ground(self, messages: list[dict[str, Any]]) -> Grounding:
        if self.retriever is None:
            raise InvalidRequest("Retrieval was asked for, but no index is configured (retrieval.index).",
                                 param="rag", code="rag_not_configured")
        query = read_conversation(messages).ask
        started = time.perf_counter()
        try:
            hits = await asyncio.to_thread(self.retriever.search, query, self.config.top_k)
        except BackendUnavailable as exc:
            log.warning("retrieval failed: %s", exc)
            raise RetrievalUnavailable(f"Retrieval is unavailable: {exc}") from None
        except RetrievalError as exc:
            log.warning("retrieval failed: %s", exc)
            raise RetrievalFailed(f"Retrieval failed: {exc}") from None
        except Exception:
            log.exception("retrieval failed unexpectedly")
            raise RetrievalFailed("Retrieval failed while searching the index; see the gateway log.") from None
        context, sources = assemble_context(hits, self.config.budget_tokens)
        elapsed = (time.perf_counter() - started) * 1000
        if not context:
            return Grounding(messages, [], elapsed)
        lead = 0
        while lead < len(messages) and isinstance(messages[lead], dict) and \
                messages[lead].get("role") in ("system", "developer"):
            lead += 1  # the client's own instructions stay first
        grounded = [*messages[:lead], {"role": "system", "content": context}, *messages[lead:]]
        return Grounding(grounded, [Source(**s) for s in sources], elapsed)
