"""Router quality and speed on the labelled data in ../shared/data/router/.

Evaluations (seed 0):
  held-out       5-fold: each file is cut into 5 random folds; for each fold one model is trained
                 on the other 4 folds of both files together (as the bundled model is) and tested
                 on that fold of each file. APGR is reported as mean and spread over the folds.
  unseen tasks   5-fold by task (MMLU subject, RouterArena source benchmark family): the test
                 folds hold tasks that no training row comes from, the closest stand-in here for a
                 deployment's own traffic
  cross          trained on one whole file, tested on the other (nothing of its style seen)
Routers: qroute's learned router (trained per fold, not the bundled model), random (uniform
scores, seeded), prompt length (characters of the ask), and a re-implementation of LiteLLM's
complexity_router heuristic (benchmarks/litellm_complexity.py). In the held-out rows a ceiling,
not a router: the mean gain of the test row's own task in the training folds, which needs the
task label no request carries. Metrics are RouteLLM's APGR, CPT(50%) and CPT(80%)
(router/metrics.py). Scoring latency is measured one query at a time with the bundled model.
Writes benchmarks/results/router_eval.{json,md} and router_curve.png.

Run: `make bench-router` (or `.venv/bin/python benchmarks/router_eval.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.litellm_complexity import ranking_score as litellm_score  # noqa: E402
from router.features import FeatureExtractor  # noqa: E402
from router.learned import LearnedScorer  # noqa: E402
from router.metrics import apgr, cpt, pgr_curve, routing_curve  # noqa: E402
from router.train import Labelled, featurize, load_labelled, train  # noqa: E402
from textkit.conversation import read_conversation  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "router"
FILES = {"mmlu": "mmlu_gpt4_vs_mixtral.jsonl", "routerarena": "routerarena_gemini_vs_haiku.jsonl"}
RESULTS = ROOT / "benchmarks" / "results"
FEATURES = FeatureExtractor()  # the plain segmenter, as at training time


CEILING = "task mean (ceiling: needs the task label)"
FOLDS = 5


def load_tasks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Each row's task (MMLU's subject, RouterArena's source benchmark such as `MMLUPro_law`) and
    task family: RouterArena's `MMLUPro_*` benchmarks share one template, so they form one family,
    `MMLUPro`, and an unseen-task fold takes them together. An MMLU subject is its own family."""
    tasks, families = [], []
    with open(path, encoding="utf-8") as fh:  # not splitlines(): prompts hold U+2028 and friends
        for line in fh:
            if line.strip():
                row = json.loads(line)
                if "dataset" in row:
                    tasks.append(str(row["dataset"]))
                    families.append(tasks[-1].split("_")[0])
                else:
                    tasks.append(str(row.get("subject", "?")))
                    families.append(tasks[-1])
    return np.array(tasks), np.array(families)


@dataclass
class DataSet:
    data: Labelled
    feats: tuple[np.ndarray, list[str]]
    tasks: np.ndarray
    families: np.ndarray

    def take(self, idx: np.ndarray) -> DataSet:
        d = self.data
        sub = Labelled([d.ids[i] for i in idx], [d.messages[i] for i in idx], d.weak[idx], d.strong[idx], d.group[idx])
        return DataSet(sub, (self.feats[0][idx], [self.feats[1][i] for i in idx]), self.tasks[idx],
                       self.families[idx])


def pooled(parts: list[DataSet]) -> tuple[Labelled, tuple[np.ndarray, list[str]]]:
    """One training set from several files, each file its own group (balanced weights in train)."""
    data = Labelled([i for p in parts for i in p.data.ids], [m for p in parts for m in p.data.messages],
                    np.concatenate([p.data.weak for p in parts]), np.concatenate([p.data.strong for p in parts]),
                    np.concatenate([np.full(len(p.data.ids), g) for g, p in enumerate(parts)]))
    return data, (np.vstack([p.feats[0] for p in parts]), [t for p in parts for t in p.feats[1]])


def fold_indices(families: np.ndarray, by_task: bool, seed: int) -> list[np.ndarray]:
    """FOLDS disjoint test index sets covering every row: random, or whole task families at a time."""
    rng = np.random.default_rng(seed)
    if not by_task:
        return np.array_split(rng.permutation(len(families)), FOLDS)
    # Whole families, largest first, each to the currently smallest fold: folds of similar size.
    names, counts = np.unique(families, return_counts=True)
    order = np.lexsort((rng.random(len(names)), -counts))
    folds: list[list[str]] = [[] for _ in range(FOLDS)]
    sizes = np.zeros(FOLDS)
    for i in order:
        k = int(np.argmin(sizes))
        folds[k].append(names[i])
        sizes[k] += counts[i]
    return [np.flatnonzero(np.isin(families, f)) for f in folds]


def task_mean(train: DataSet, test: DataSet) -> np.ndarray:
    gain = train.data.strong - train.data.weak
    means = {t: gain[train.tasks == t].mean() for t in np.unique(train.tasks)}
    return np.array([means.get(t, gain.mean()) for t in test.tasks])


def curve_row(name: str, scores: np.ndarray, test: Labelled) -> dict:
    curve = routing_curve(scores, test.weak, test.strong)
    return {"router": name, "APGR": apgr(curve), "CPT50": cpt(curve, 0.5), "CPT80": cpt(curve, 0.8)}


def summarise(name: str, per_fold: list[dict]) -> dict:
    values = {k: [f[k] for f in per_fold] for k in ("APGR", "CPT50", "CPT80")}
    return {"router": name, **{k: float(np.mean(v)) for k, v in values.items()},
            "APGR_sd": float(np.std(values["APGR"])), "APGR_folds": values["APGR"]}


def baselines(test: Labelled, seed: int) -> dict[str, np.ndarray]:
    return {
        "random": np.random.default_rng(seed).random(len(test.ids)),
        "prompt length": np.array([float(read_conversation(m).total_chars) for m in test.messages]),
        "LiteLLM complexity_router": np.array([litellm_score(m) for m in test.messages]),
    }


def percentile(scores: np.ndarray) -> np.ndarray:
    """Ranks within one fold, so out-of-fold scores of different models can share one curve."""
    return (np.argsort(np.argsort(scores, kind="stable"), kind="stable") + 0.5) / len(scores)


def folded(sets: dict[str, DataSet], by_task: bool, seed: int, ceiling: bool) -> tuple[list[dict], dict]:
    """Train per fold on the other folds of every file; per file, each router's summary and
    out-of-fold scores (fold percentiles) for the curve."""
    folds = {name: fold_indices(ds.families, by_task, seed) for name, ds in sets.items()}
    per_fold: dict[str, dict[str, list[dict]]] = {name: {} for name in sets}
    oof: dict[str, dict[str, np.ndarray]] = {name: {} for name in sets}
    for k in range(FOLDS):
        trains = {n: ds.take(np.setdiff1d(np.arange(len(ds.tasks)), folds[n][k])) for n, ds in sets.items()}
        data, feats = pooled(list(trains.values()))
        model = train(data, features=feats)
        for name, ds in sets.items():
            test = ds.take(folds[name][k])
            scores = {"qroute learned": np.array([model.score(m, FEATURES) for m in test.data.messages]),
                      **baselines(test.data, seed + k)}
            if ceiling:
                scores[CEILING] = task_mean(trains[name], test)
            for router, s in scores.items():
                per_fold[name].setdefault(router, []).append(curve_row(router, s, test.data))
                oof[name].setdefault(router, np.zeros(len(ds.tasks)))[folds[name][k]] = percentile(s)
        print(f"  fold {k + 1}/{FOLDS} done", flush=True)
    kind = "unseen tasks" if by_task else "held-out"
    evaluations, curves = [], {}
    for name, ds in sets.items():
        label = f"{kind} {name} ({FOLDS}-fold)"
        rows = [summarise(router, folds_) for router, folds_ in per_fold[name].items()]
        evaluations.append({"name": label, "rows": len(ds.tasks), "folds": FOLDS, "routers": rows})
        curves[label] = {r: pgr_curve(s, ds.data.weak, ds.data.strong) for r, s in oof[name].items()}
        print(label, {r["router"]: round(r["APGR"], 3) for r in rows}, flush=True)
    return evaluations, curves


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

    cols = 2
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), sharey=True, squeeze=False)
    for ax, (title, per_router) in zip(axes.flat, curves.items(), strict=False):
        for name, (x, y) in per_router.items():
            style = {"linewidth": 2} if name.startswith("qroute") else {"linewidth": 1.1}
            if name == CEILING:
                style = {"linewidth": 1, "linestyle": "--", "color": "grey"}
            ax.plot(x * 100, y * 100, label=name, **style)
        ax.axhline(100, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("requests sent to the cloud (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("quality gap recovered (%)")
    axes.flat[0].legend(loc="lower right", fontsize=7)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    fig.suptitle("Picking a threshold: cloud share against quality recovered (held-out: out-of-fold scores)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def markdown(results: dict) -> str:
    lines = ["| evaluation | router | APGR | CPT(50%) | CPT(80%) |", "|---|---|---:|---:|---:|"]
    for ev in results["evaluations"]:
        for row in ev["routers"]:
            bold = "**" if row["router"].startswith("qroute") else ""
            spread = f" ± {row['APGR_sd']:.3f}" if "APGR_sd" in row else ""
            lines.append(f"| {ev['name']} | {bold}{row['router']}{bold} | {bold}{row['APGR']:.3f}{bold}{spread} | "
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

    sets: dict[str, DataSet] = {}
    for name, file in FILES.items():
        data = load_labelled([DATA / file])
        sets[name] = DataSet(data, featurize(data.messages), *load_tasks(DATA / file))
        print(f"loaded {name}: {len(data.ids)} rows, {len(np.unique(sets[name].tasks))} tasks", flush=True)

    results: dict = {"seed": args.seed, "folds": FOLDS, "evaluations": []}
    curves: dict = {}
    for by_task in (False, True):
        print("unseen-task folds ..." if by_task else "held-out folds ...", flush=True)
        evaluations, fold_curves = folded(sets, by_task, args.seed, ceiling=not by_task)
        results["evaluations"] += evaluations
        curves.update(fold_curves)
    for src, dst in (("mmlu", "routerarena"), ("routerarena", "mmlu")):
        print(f"training on all of {src} ...", flush=True)
        model = train(sets[src].data, features=sets[src].feats)
        test = sets[dst].data
        scores = {"qroute learned": np.array([model.score(m, FEATURES) for m in test.messages]),
                  **baselines(test, args.seed)}
        name = f"cross: {src} -> {dst}"
        rows = [curve_row(router, s, test) for router, s in scores.items()]
        results["evaluations"].append({"name": name, "rows": len(test.ids), "routers": rows})
        curves[name] = {router: pgr_curve(s, test.weak, test.strong) for router, s in scores.items()}
        print(name, {r["router"]: round(r["APGR"], 3) for r in rows}, flush=True)

    bundled = LearnedScorer.from_paths()
    sample = [m for ds in sets.values() for m in ds.data.messages[:: max(1, len(ds.data.ids) // 1500)]]
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
