"""Router quality and speed on the labelled data in ../shared/data/router/.

Splits (seed 0):
  held-out   each data set is split 80/20 at random; the router is trained on both 80% parts
             together and tested on each 20% part
  cross      trained on one whole data set, tested on the other whole one (no row, prompt style or
             topic of the test set is seen in training)
Routers: qroute's learned router (trained per split, not the bundled model), random (uniform
scores, seeded), prompt length (characters of the ask), and a re-implementation of LiteLLM's
complexity_router heuristic (benchmarks/litellm_complexity.py). Metrics are RouteLLM's APGR,
CPT(50%) and CPT(80%) (router/metrics.py). Scoring latency is measured one query at a time with
the bundled model. Writes benchmarks/results/router_eval.{json,md} and router_curve.png.

Run: `make bench-router` (or `.venv/bin/python benchmarks/router_eval.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.litellm_complexity import ranking_score as litellm_score  # noqa: E402
from router.learned import LearnedScorer  # noqa: E402
from router.metrics import apgr, cpt, pgr_curve, routing_curve  # noqa: E402
from router.text import read_conversation  # noqa: E402
from router.train import Labelled, featurize, load_labelled, train  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "router"
FILES = {"mmlu": "mmlu_gpt4_vs_mixtral.jsonl", "routerarena": "routerarena_gemini_vs_haiku.jsonl"}
RESULTS = ROOT / "benchmarks" / "results"


def subset(data: Labelled, feats, idx: np.ndarray):
    sub = Labelled([data.ids[i] for i in idx], [data.messages[i] for i in idx], data.weak[idx],
                   data.strong[idx], data.group[idx])
    return sub, (feats[0][idx], [feats[1][i] for i in idx])


def evaluate(name: str, scores: np.ndarray, test: Labelled) -> dict:
    curve = routing_curve(scores, test.weak, test.strong)
    return {"router": name, "APGR": apgr(curve), "CPT50": cpt(curve, 0.5), "CPT80": cpt(curve, 0.8)}


def baselines(test: Labelled, seed: int) -> dict[str, np.ndarray]:
    return {
        "random": np.random.default_rng(seed).random(len(test.ids)),
        "prompt length": np.array([float(read_conversation(m).total_chars) for m in test.messages]),
        "LiteLLM complexity_router": np.array([litellm_score(m) for m in test.messages]),
    }


def latency(messages: list, score_fn, repeat: int = 1) -> dict:
    times = []
    for _ in range(repeat):
        for m in messages:
            started = time.perf_counter()
            score_fn(m)
            times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "n": len(times)}


def plot(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.6), sharey=True)
    for ax, (title, per_router) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for name, (x, y) in per_router.items():
            ax.plot(x * 100, y * 100, label=name, linewidth=2 if name.startswith("qroute") else 1.2)
        ax.axhline(100, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(title)
        ax.set_xlabel("requests sent to the cloud (%)")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("quality gap recovered (%)")
    np.atleast_1d(axes)[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Picking a threshold: cloud share against quality recovered")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: dict) -> str:
    lines = ["| evaluation | router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---:|---:|---:|"]
    for ev in results["evaluations"]:
        for row in ev["routers"]:
            bold = "**" if row["router"].startswith("qroute") else ""
            lines.append(f"| {ev['name']} | {bold}{row['router']}{bold} | {bold}{row['APGR']:.3f}{bold} | "
                         f"{row['CPT50']:.1f}% | {row['CPT80']:.1f}% |")
    lat = results["latency"]
    lines += ["", "| scoring latency, one query at a time | p50 ms | p99 ms |", "|---|---:|---:|"]
    for name, v in lat.items():
        lines.append(f"| {name} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "router_eval.json")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    sets = {}
    for name, file in FILES.items():
        data = load_labelled([DATA / file])
        sets[name] = (data, featurize(data.messages))
        print(f"loaded {name}: {len(data.ids)} rows", flush=True)

    splits = {}
    for name, (data, feats) in sets.items():
        order = rng.permutation(len(data.ids))
        cut = int(0.8 * len(order))
        splits[name] = (subset(data, feats, order[:cut]), subset(data, feats, order[cut:]))

    # Held-out: one model on both training parts, each file its own group (balanced weights).
    (m_tr, m_tr_f), (r_tr, r_tr_f) = splits["mmlu"][0], splits["routerarena"][0]
    pooled = Labelled(m_tr.ids + r_tr.ids, m_tr.messages + r_tr.messages, np.concatenate([m_tr.weak, r_tr.weak]),
                      np.concatenate([m_tr.strong, r_tr.strong]),
                      np.concatenate([np.zeros(len(m_tr.ids), int), np.ones(len(r_tr.ids), int)]))
    pooled_f = (np.vstack([m_tr_f[0], r_tr_f[0]]), m_tr_f[1] + r_tr_f[1])
    print("training on the pooled 80% parts ...", flush=True)
    held_model = train(pooled, features=pooled_f)
    evaluations = [
        (f"held-out {name} (20%)", held_model, splits[name][1][0]) for name in sets
    ]
    for src, dst in (("mmlu", "routerarena"), ("routerarena", "mmlu")):
        print(f"training on all of {src} ...", flush=True)
        model = train(sets[src][0], features=sets[src][1])
        evaluations.append((f"cross: {src} -> {dst}", model, sets[dst][0]))

    results: dict = {"seed": args.seed, "evaluations": []}
    curves: dict = {}
    for name, model, test in evaluations:
        ours = np.array([model.score(m) for m in test.messages])
        scores = {"qroute learned": ours, **baselines(test, args.seed)}
        rows = [evaluate(router, s, test) for router, s in scores.items()]
        results["evaluations"].append({"name": name, "rows": len(test.ids), "routers": rows})
        curves[name] = {router: pgr_curve(s, test.weak, test.strong) for router, s in scores.items()}
        print(name, {r["router"]: round(r["APGR"], 3) for r in rows}, flush=True)

    bundled = LearnedScorer.from_paths()
    sample = [m for data, _ in sets.values() for m in data.messages[:: max(1, len(data.ids) // 1500)]]
    sample += [[{"role": "user", "content": q}] for q in (
        "请对比华东精工和南方重工两家公司的产品线、客户结构和毛利率，分别列举优劣势，并给出合作建议。" * 4,
        "华东精工的客服电话是多少？", "字" * 100_000)]
    bundled.score(sample[0])  # first call loads jieba's dictionary
    results["latency"] = {
        "qroute learned (bundled model)": latency(sample, bundled.score, repeat=2),
        "LiteLLM complexity_router (re-implemented)": latency(sample, litellm_score, repeat=2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table + "\n")
    plot(curves, args.out.parent / "router_curve.png")
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
