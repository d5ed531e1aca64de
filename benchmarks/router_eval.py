"""Router quality on labelled files it never saw, and scoring speed (../shared/data/router/).

Leave one file out (LOFO): for each of the six files, a model is trained on the other five (each
file weighted to the same total) and tested on the sixth, whose source, models and style it has
never seen. That is the situation of a deployment, and random folds hide it: the files disagree on
what makes a request hard.

Recipes (router/train.py: a length prior plus a learned correction shrunk to a share of it) are a
small grid over the correction's weight and regularisation. The recipe is chosen by its mean LOFO
APGR over the six files; so that the chosen recipe's figures are not judged by the files that chose
it, each file is also scored by the recipe chosen on the other five alone (nested: inner LOFO over
those five) and that row is the headline. Baselines on every file: prompt length (characters of the
ask), a re-implementation of LiteLLM's complexity_router (benchmarks/litellm_complexity.py) and
random (seeded). Metrics are RouteLLM's APGR, CPT(50%) and CPT(80%) (router/metrics.py). Scoring
latency is measured one query at a time with the bundled model.
Writes benchmarks/results/router_eval.{json,md} and router_curve.png.

Run: `make bench-router` (or `.venv/bin/python benchmarks/router_eval.py`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.litellm_complexity import ranking_score as litellm_score  # noqa: E402
from router.learned import LearnedScorer  # noqa: E402
from router.metrics import apgr, cpt, pgr_curve, routing_curve  # noqa: E402
from router.model import ComplexityModel  # noqa: E402
from router.train import DEFAULT_C, DEFAULT_MAX_NGRAMS, TRANSFER, Labelled, featurize, load_labelled, train  # noqa: E402
from textkit.conversation import read_conversation  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "router"
FILES = {
    "mmlu (GPT-4 vs Mixtral)": "mmlu_gpt4_vs_mixtral.jsonl",
    "routerarena (Gemini vs Haiku)": "routerarena_gemini_vs_haiku.jsonl",
    "math level 5 (Qwen2.5 7B vs 72B)": "qwen25_7b_vs_72b_math_l5.jsonl",
    "cruxeval (Qwen2.5 7B vs 72B)": "qwen25_7b_vs_72b_crux.jsonl",
    "mmlu-pro (Qwen1.5 7B vs 72B)": "qwen15_7b_vs_72b_mmlupro.jsonl",
    "gaokao zh (GPT-3.5 vs GPT-4)": "gaokao_zh_gpt35_vs_gpt4.jsonl",
}
RESULTS = ROOT / "benchmarks" / "results"
QROUTE = "qroute (recipe chosen without this file)"
QROUTE_ALL = "qroute (recipe chosen on all six)"
LENGTH, LITELLM, RANDOM = "prompt length", "LiteLLM complexity_router", "random"


@dataclass(frozen=True)
class Recipe:
    """router.train.train's arguments; correction None is the learned model alone."""

    c: float
    correction: float | None
    max_ngrams: int = 0

    @property
    def name(self) -> str:
        grams = f", {self.max_ngrams} n-grams" if self.max_ngrams else ""
        if self.correction is None:
            return f"learned alone (C={self.c:g}{grams})"
        if self.correction == 0:
            return "length prior only"
        return f"length + {self.correction:g} x correction (C={self.c:g}{grams})"


def recipes(with_ngrams: bool) -> list[Recipe]:
    grid = [Recipe(1.0, 0.0)] + [Recipe(c, k) for c in (0.01, 1.0) for k in (0.1, 0.25, 0.5, 1.0)]
    grid.append(Recipe(1.0, None))
    if with_ngrams:  # `qroute route train`'s defaults, for own traffic: slow to train 21 times
        grid.append(Recipe(DEFAULT_C, None, DEFAULT_MAX_NGRAMS))
    return grid


@dataclass
class DataSet:
    data: Labelled
    x: np.ndarray
    texts: list[str]
    asks: list[str]


def pooled(parts: list[DataSet]) -> tuple[Labelled, tuple[np.ndarray, list[str]]]:
    """One training set from several files, each file its own group (balanced weights in train)."""
    data = Labelled([i for p in parts for i in p.data.ids], [m for p in parts for m in p.data.messages],
                    np.concatenate([p.data.weak for p in parts]), np.concatenate([p.data.strong for p in parts]),
                    np.concatenate([np.full(len(p.data.ids), g) for g, p in enumerate(parts)]))
    return data, (np.vstack([p.x for p in parts]), [t for p in parts for t in p.texts])


class Lofo:
    """Models trained on subsets of the files, cached: the nested choice reuses them."""

    def __init__(self, sets: dict[str, DataSet]) -> None:
        self.sets = sets
        self._models: dict[tuple[Recipe, frozenset[str]], ComplexityModel] = {}
        self._apgr: dict[tuple[Recipe, frozenset[str], str], float] = {}

    def model(self, recipe: Recipe, files: frozenset[str]) -> ComplexityModel:
        key = (recipe, files)
        if key not in self._models:
            data, feats = pooled([self.sets[f] for f in sorted(files)])
            self._models[key] = train(data, c=recipe.c, max_ngrams=recipe.max_ngrams, features=feats,
                                      correction=recipe.correction)
        return self._models[key]

    def scores(self, recipe: Recipe, test: str, also_out: frozenset[str] = frozenset()) -> np.ndarray:
        ds = self.sets[test]
        return self.model(recipe, frozenset(self.sets) - {test} - also_out).decisions(ds.x, ds.asks)

    def apgr(self, recipe: Recipe, test: str, also_out: frozenset[str] = frozenset()) -> float:
        key = (recipe, also_out, test)
        if key not in self._apgr:
            d = self.sets[test].data
            self._apgr[key] = apgr(routing_curve(self.scores(recipe, test, also_out), d.weak, d.strong))
        return self._apgr[key]

    def choose(self, grid: list[Recipe], without: str | None = None) -> Recipe:
        """The recipe with the best mean LOFO APGR over the files (all, or all but `without`,
        which then plays no part at all: inner models are trained without it too). Ties go to
        the smaller correction, the earlier in the grid."""
        names = [n for n in self.sets if n != without]
        out = frozenset({without}) if without else frozenset()

        def mean(r: Recipe) -> float:
            return float(np.mean([self.apgr(r, t, out - {t}) for t in names]))
        return max(grid, key=lambda r: (round(mean(r), 6), -grid.index(r)))


def bundled_recipe() -> Recipe:
    return Recipe(TRANSFER["c"], TRANSFER["correction"], TRANSFER["max_ngrams"])


def curve_row(name: str, scores: np.ndarray, test: Labelled) -> dict:
    curve = routing_curve(scores, test.weak, test.strong)
    return {"router": name, "APGR": apgr(curve), "CPT50": cpt(curve, 0.5), "CPT80": cpt(curve, 0.8)}


def baselines(ds: DataSet, seed: int) -> dict[str, np.ndarray]:
    messages = ds.data.messages
    return {
        LENGTH: np.array([float(read_conversation(m).total_chars) for m in messages]),
        LITELLM: np.array([litellm_score(m) for m in messages]),
        RANDOM: np.random.default_rng(seed).random(len(messages)),
    }


def latency(messages: list, score_fn: Callable, repeat: int = 1) -> dict:
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

    cols = 3
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), sharey=True, squeeze=False)
    for ax, (title, per_router) in zip(axes.flat, curves.items(), strict=False):
        for name, (x, y) in per_router.items():
            ax.plot(x * 100, y * 100, label=name, linewidth=2 if name.startswith("qroute") else 1.1)
        ax.axhline(100, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(f"left out: {title}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("requests sent to the strong model (%)")
    for ax in axes[:, 0]:
        ax.set_ylabel("quality gap recovered (%)")
    axes.flat[0].legend(loc="lower right", fontsize=7)
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    fig.suptitle("Leave one file out: trained on the other five, tested on this one")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def wins(per_file: list[dict], router: str) -> int:
    """Files on which `router` beats both prompt length and LiteLLM."""
    count = 0
    for ev in per_file:
        by = {r["router"]: r["APGR"] for r in ev["routers"]}
        count += by[router] > max(by[LENGTH], by[LITELLM])
    return count


def markdown(results: dict) -> str:
    n = len(results["per_file"])
    lines = [f"Leave one file out: trained on {n - 1} files, tested on the one left out. qroute's recipe is "
             "chosen by mean LOFO APGR; the first qroute row per file uses the recipe chosen on the other "
             f"{n - 1} files only (nested), the second the recipe chosen on all {n} "
             f"(`{results['chosen']}`; the bundled model's is `{results['bundled']}`).", "",
             "| left-out file | rows | router | APGR | CPT(50%) | CPT(80%) |", "|---|---:|---|---:|---:|---:|"]
    for ev in results["per_file"]:
        for row in ev["routers"]:
            bold = "**" if row["router"].startswith("qroute") else ""
            recipe = f" `{row['recipe']}`" if "recipe" in row and row["router"] == QROUTE else ""
            lines.append(f"| {ev['file']} | {ev['rows']} | {bold}{row['router']}{bold}{recipe} | "
                         f"{bold}{row['APGR']:.3f}{bold} | {row['CPT50']:.1f}% | {row['CPT80']:.1f}% |")
    lines += ["", f"qroute above both prompt length and LiteLLM: {results['wins'][QROUTE]} of {n} files "
              f"(nested choice), {results['wins'][QROUTE_ALL]} of {n} (recipe chosen on all six).", "",
              "| recipe (LOFO APGR per left-out file) | " + " | ".join(results["files"]) + " | mean | min |",
              "|---|" + "---:|" * (n + 2)]
    for row in results["recipes"]:
        mark = "**" if row["recipe"] == results["chosen"] else ""
        lines.append(f"| {mark}{row['recipe']}{mark} | " + " | ".join(f"{v:.3f}" for v in row["APGR"]) +
                     f" | {row['mean']:.3f} | {row['min']:.3f} |")
    lines += ["", "| scoring latency, one query at a time | p50 ms | p99 ms |", "|---|---:|---:|"]
    for name, v in results["latency"].items():
        lines.append(f"| {name} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "router_eval.json")
    parser.add_argument("--with-ngrams", action="store_true", help="add an unshrunk recipe with n-grams (slow)")
    args = parser.parse_args()

    sets: dict[str, DataSet] = {}
    for name, file in FILES.items():
        data = load_labelled([DATA / file])
        x, texts = featurize(data.messages)
        sets[name] = DataSet(data, x, texts, [read_conversation(m).ask for m in data.messages])
        print(f"loaded {name}: {len(data.ids)} rows", flush=True)
    grid = recipes(args.with_ngrams)
    lofo = Lofo(sets)
    table = []
    for r in grid:
        values = [lofo.apgr(r, t) for t in sets]
        table.append({"recipe": r.name, "APGR": values, "mean": float(np.mean(values)), "min": float(np.min(values))})
        print(f"{r.name}: " + " ".join(f"{v:.3f}" for v in values), flush=True)
    chosen = lofo.choose(grid)
    per_file, curves = [], {}
    for i, (name, ds) in enumerate(sets.items()):
        nested = lofo.choose(grid, without=name)
        scores = {QROUTE: lofo.scores(nested, name), QROUTE_ALL: lofo.scores(chosen, name),
                  **baselines(ds, args.seed + i)}
        rows = [curve_row(router, s, ds.data) for router, s in scores.items()]
        rows[0]["recipe"] = nested.name
        per_file.append({"file": name, "rows": len(ds.data.ids), "routers": rows})
        curves[name] = {router: pgr_curve(s, ds.data.weak, ds.data.strong) for router, s in scores.items()}
        print(name, {r["router"]: round(r["APGR"], 3) for r in rows}, flush=True)

    bundled = LearnedScorer.from_paths()
    sample = [m for ds in sets.values() for m in ds.data.messages[:: max(1, len(ds.data.ids) // 500)]]
    sample += [[{"role": "user", "content": q}] for q in (
        "请对比华东精工和南方重工两家公司的产品线、客户结构和毛利率，分别列举优劣势，并给出合作建议。" * 4,
        "华东精工的客服电话是多少？", "字" * 100_000)]
    bundled.score(sample[0])
    results: dict = {
        "seed": args.seed, "files": list(sets), "chosen": chosen.name, "bundled": bundled_recipe().name,
        "recipes": table, "per_file": per_file,
        "wins": {QROUTE: wins(per_file, QROUTE), QROUTE_ALL: wins(per_file, QROUTE_ALL)},
        "latency": {"qroute learned (bundled model)": latency(sample, bundled.score, repeat=2),
                    "LiteLLM complexity_router (re-implemented)": latency(sample, litellm_score, repeat=2)},
    }
    if chosen != bundled_recipe():
        print(f"NOTE: the bundled model's recipe ({bundled_recipe().name}) is not the one chosen here "
              f"({chosen.name}): update router.train.TRANSFER and run `make train-router`", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    text = markdown(results)
    args.out.with_suffix(".md").write_text(text + "\n")
    plot(curves, args.out.parent / "router_curve.png")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
