"""Retrieval-augmented requests: the same grounded context for every route.

Asked for per request (`"rag": true` in the body, or header `x-qroute-rag: on`), or by default for
listed client keys. The index is opened once at start-up; the search (jieba, BM25, embedding a
query) runs in a worker thread so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.settings import RetrievalConfig
from router.text import read_conversation

log = logging.getLogger("qroute.rag")


@dataclass
class Grounding:
    messages: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    retrieval_ms: float

    def header(self) -> str:
        """ASCII-safe JSON (doc ids may be Chinese; header values must be Latin-1)."""
        return orjson.dumps([{"id": s["id"], "doc_id": s["doc_id"]} for s in self.sources]).decode() \
            .encode("ascii", "backslashreplace").decode()


class RagService:
    def __init__(self, config: RetrievalConfig, default_keys: frozenset[str]) -> None:
        self.config = config
        self.default_keys = default_keys
        self.retriever = None

    async def start(self) -> None:
        if self.config.index:
            from retrieval.pipeline import Retriever

            self.retriever = await asyncio.to_thread(Retriever.open, self.config.index)
            log.warning("retrieval index %s loaded: %d chunks", self.config.index, len(self.retriever.data.chunks))

    def wanted(self, body_flag: bool | None, header: str | None, client_key: str | None) -> bool:
        if body_flag is not None:
            return body_flag
        if header:
            value = header.strip().lower()
            if value in ("on", "true", "1", "yes"):
                return True
            if value in ("off", "false", "0", "no"):
                return False
            raise InvalidRequest("x-qroute-rag must be 'on' or 'off'.", param="x-qroute-rag")
        return self.config.default or (client_key is not None and client_key in self.default_keys)

    async def ground(self, messages: list[dict[str, Any]]) -> Grounding:
        if self.retriever is None:
            raise InvalidRequest("Retrieval was asked for, but no index is configured (retrieval.index).",
                                 param="rag", code="rag_not_configured")
        from retrieval.pipeline import assemble_context

        query = read_conversation(messages).ask
        started = time.perf_counter()
        hits = await asyncio.to_thread(self.retriever.search, query, self.config.top_k)
        context, sources = assemble_context(hits, self.config.budget_tokens)
        elapsed = (time.perf_counter() - started) * 1000
        if not context:
            return Grounding(messages, [], elapsed)
        lead = 0
        while lead < len(messages) and isinstance(messages[lead], dict) and \
                messages[lead].get("role") in ("system", "developer"):
            lead += 1  # the client's own instructions stay first
        grounded = [*messages[:lead], {"role": "system", "content": context}, *messages[lead:]]
        return Grounding(grounded, sources, elapsed)
