"""The eight reference cases on the sample knowledge base (examples/kb/): each case's key-point
coverage in the retrieved context, per retrieval mode, with a pass line at 60%; and in the answer
when a gateway with a real model backend is given (--gateway URL --key KEY).

Run: `make bench-rag`. Writes benchmarks/results/rag_eval.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from retrieval.pipeline import Retriever, assemble_context  # noqa: E402

KB = ROOT / "examples" / "kb"
RESULTS = ROOT / "benchmarks" / "results"
PASS = 0.6


def coverage(text: str, points: list[str]) -> float:
    return sum(p in text for p in points) / len(points)


def build_index(target: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gateway.cli", "index", "build", "--input", str(KB / "docs"),
                    str(KB / "records.jsonl"), "--index", str(target), "--dictionary", str(KB / "dictionary.txt"),
                    "--quiet"], check=True, capture_output=True)
    return time.perf_counter() - started


def ask(gateway: str, key: str, query: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway}/v1", api_key=key, max_retries=1)
    out = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": query}],
                                         extra_body={"rag": True})
    return out.choices[0].message.content or ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--gateway", default=None, help="qroute URL whose backends are real models")
    parser.add_argument("--key", default=None)
    args = parser.parse_args()
    cases = [json.loads(line) for line in (KB / "cases.jsonl").read_text(encoding="utf-8").splitlines() if line]
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "kb"
        build_s = build_index(index)
        modes = {m: Retriever.open(index, mode=m) for m in ("bm25", "dense", "hybrid")}
        rows = []
        for case in cases:
            row = {"id": case["id"], "kind": case["kind"], "key_points": len(case["key_points"])}
            for mode, retriever in modes.items():
                started = time.perf_counter()
                top_k = case.get("top_k", args.top_k)  # a case may test precision with fewer chunks
                context, _ = assemble_context(retriever.search(case["query"], top_k), budget_tokens=4000)
                row[f"{mode}_ms"] = (time.perf_counter() - started) * 1000
                row[mode] = coverage(context, case["key_points"])
            if args.gateway:
                row["answer"] = coverage(ask(args.gateway, args.key, case["query"]), case["key_points"])
            rows.append(row)
    results = {"top_k": args.top_k, "pass_line": PASS, "index_build_s": round(build_s, 1), "cases": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "rag_eval.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    table = markdown(results, bool(args.gateway))
    (RESULTS / "rag_eval.md").write_text(table + "\n")
    print(table)
    return 0


def markdown(results: dict, with_answer: bool) -> str:
    head = "| case | kind | BM25 | dense | hybrid |" + (" answer |" if with_answer else "")
    lines = [f"Key-point coverage of the retrieved context (top {results['top_k']} chunks, top 2 for hybrid-only); "
             f"pass line {results['pass_line']:.0%}.", "", head,
             "|---|---|---:|---:|---:|" + ("---:|" if with_answer else "")]
    for r in results["cases"]:
        cells = [f"{r[m]:.0%}{'' if r[m] >= PASS else ' ✗'}" for m in ("bm25", "dense", "hybrid")]
        if with_answer:
            cells.append(f"{r['answer']:.0%}")
        lines.append(f"| {r['id']} | {r['kind']} | " + " | ".join(cells) + " |")
    n = len(results["cases"])
    passed = {m: sum(r[m] >= PASS for r in results["cases"]) for m in ("bm25", "dense", "hybrid")}
    lines.append(f"| **passed** | | {passed['bm25']}/{n} | {passed['dense']}/{n} | {passed['hybrid']}/{n} |"
                 + (" |" if with_answer else ""))
    hy = sorted(r["hybrid_ms"] for r in results["cases"])
    lines += ["", f"Hybrid retrieval took {hy[len(hy) // 2]:.1f} ms per case (median) on this machine, against "
              "1,437 ms on average in the reference experiment; index build "
              f"{results['index_build_s']} s."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
