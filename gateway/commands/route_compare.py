"""`qroute route compare --old CURRENT --new NEW --data HELDOUT.jsonl`: two router models side by side on
labelled requests neither was trained on: APGR, CPT(50%), CPT(80%), the share each would send to the
cloud at the configured thresholds, and the thresholds that give the new model the old one's shares
(a new model scores on its own scale: swapping it without them moves spend). At that same cloud share,
the part of the quality gap each recovers says what the swap buys. CURRENT means the model the config
names (or the bundled one)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from gateway.settings import RouterConfig, load_settings
from router.calibrate import threshold_for_share
from router.decide import Thresholds, decide
from router.learned import LearnedScorer
from router.metrics import apgr, cpt, routing_curve
from router.routes import CLOUD
from router.train import load_labelled

CURRENT = "CURRENT"


def _scorer(path: str, router_cfg: RouterConfig) -> LearnedScorer:
    model = router_cfg.model_path if path == CURRENT else path
    return LearnedScorer.from_paths(model, router_cfg.domain_dictionary)


def gap_recovered(scores: np.ndarray, weak: np.ndarray, strong: np.ndarray, cloud_share: float) -> float:
    """The part of the weak-to-strong quality gap recovered when the top `cloud_share` of requests by
    score go to the cloud (1.0: as good as all-cloud)."""
    order = np.argsort(-scores, kind="stable")
    chosen = np.zeros(len(scores), dtype=bool)
    chosen[order[: round(cloud_share * len(scores))]] = True
    gap = float(strong.mean() - weak.mean())
    if gap == 0:
        return 1.0
    return float((np.where(chosen, strong, weak).mean() - weak.mean()) / gap)


def matched_thresholds(old_scores: np.ndarray, new_scores: np.ndarray, thresholds: Thresholds) -> Thresholds:
    """The new model's t1/t2 that route the same shares of these requests as the old model's do."""
    cloud = float(np.mean(old_scores > thresholds.t2))
    above_t1 = float(np.mean(old_scores > thresholds.t1))
    t2 = threshold_for_share(new_scores, cloud)
    t1 = min(t2, threshold_for_share(new_scores, above_t1)) if thresholds.t1 < thresholds.t2 else t2
    return Thresholds(round(t1, 6), round(t2, 6))


def compare(old: str, new: str, data: list[str], config: str | None) -> dict[str, Any]:
    router_cfg = load_settings(config).router if config else RouterConfig()
    thresholds = Thresholds(router_cfg.t1, router_cfg.t2)
    labelled = load_labelled(data)
    rows: dict[str, Any] = {"requests": len(labelled.ids), "t1": thresholds.t1, "t2": thresholds.t2, "models": {}}
    scored: dict[str, np.ndarray] = {}
    for name, path in (("old", old), ("new", new)):
        scorer = _scorer(path, router_cfg)
        scores = scored[name] = np.array([scorer.score(m) for m in labelled.messages])
        curve = routing_curve(scores, labelled.weak, labelled.strong)
        cloud = float(np.mean([decide(s, thresholds) == CLOUD for s in scores]))
        rows["models"][name] = {"path": path, "apgr": round(apgr(curve), 4), "cpt50": round(cpt(curve, 0.5), 2),
                                "cpt80": round(cpt(curve, 0.8), 2), "cloud_share": round(cloud, 4)}
    old_cloud = rows["models"]["old"]["cloud_share"]
    for name in ("old", "new"):
        rows["models"][name]["gap_recovered_at_old_share"] = round(
            gap_recovered(scored[name], labelled.weak, labelled.strong, old_cloud), 4)
    matched = matched_thresholds(scored["old"], scored["new"], thresholds)
    rows["new_thresholds"] = {"t1": matched.t1, "t2": matched.t2}
    return rows


def cmd_compare(args: argparse.Namespace) -> int:
    result = compare(args.old, args.new, args.data, args.config)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['requests']} labelled requests; thresholds t1 {result['t1']:g}, t2 {result['t2']:g}")
    old_share = result["models"]["old"]["cloud_share"]
    gap_at = f"gap at {old_share:.0%}"
    print(f"{'':5}{'APGR':>8}{'CPT(50%)':>10}{'CPT(80%)':>10}{'cloud share':>13}{gap_at:>12}  model")
    for name, row in result["models"].items():
        print(f"{name:5}{row['apgr']:>8.4f}{row['cpt50']:>9.1f}%{row['cpt80']:>9.1f}%{row['cloud_share']:>12.1%}"
              f"{row['gap_recovered_at_old_share']:>12.1%}  {row['path']}")
    better = result["models"]["new"]["apgr"] - result["models"]["old"]["apgr"]
    print(f"new - old APGR: {better:+.4f} (higher routes better: the same quality for fewer cloud calls)")
    matched = result["new_thresholds"]
    print(f"the new model routes the old shares at t1 {matched['t1']:g}, t2 {matched['t2']:g} "
          "(swap with them: PUT /admin/router/model {\"path\": ..., \"t1\": ..., \"t2\": ...})")
    return 0


def add_compare_parser(rsub: argparse._SubParsersAction, guarded: Any) -> None:
    p = rsub.add_parser("compare", help="two router models side by side on held-out labelled requests")
    p.add_argument("--old", default=CURRENT,
                   help="a model file, or CURRENT (the config's or the bundled one; after a swap at run time, "
                   "give the file GET /admin/router names as `model`)")
    p.add_argument("--new", required=True, help="a model file (e.g. from `qroute route train`)")
    p.add_argument("--data", nargs="+", required=True, help='held-out JSON lines {"messages","weak","strong"}')
    p.add_argument("--config", default=None, help="gateway YAML config (thresholds, model, dictionary)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=guarded(cmd_compare))
