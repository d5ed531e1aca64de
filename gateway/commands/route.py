"""`qroute route score | explain | calibrate | train`. Flags and JSON-lines formats are contracts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from gateway.commands.route_compare import add_compare_parser
from gateway.commands.route_labels import add_labels_parser
from gateway.config_file import set_keys
from gateway.settings import ConfigError, RouterConfig, load_settings
from router.calibrate import share_above, threshold_for_share
from router.decide import Thresholds, decide
from router.learned import LearnedScorer
from router.train import DEFAULT_C, DEFAULT_MAX_NGRAMS, TRANSFER
from textkit.jsonl import read_jsonl


def _thresholds(config: str | None) -> tuple[Thresholds, RouterConfig]:
    router_cfg = load_settings(config).router if config else RouterConfig()
    return Thresholds(router_cfg.t1, router_cfg.t2), router_cfg


def _scorer(args: argparse.Namespace, router_cfg: RouterConfig) -> LearnedScorer:
    return LearnedScorer.from_paths(args.model or router_cfg.model_path, router_cfg.domain_dictionary)


def _skip(number: int, reason: str) -> None:
    print(f"qroute route: line {number}: {reason}; skipped", file=sys.stderr)


def _rows(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    return (row for _, row in read_jsonl(lines, _skip))


def cmd_score(args: argparse.Namespace) -> int:
    thresholds, router_cfg = _thresholds(args.config)
    scorer = _scorer(args, router_cfg)
    out = sys.stdout
    for row in _rows(sys.stdin):
        score = scorer.score(row.get("messages") or [])
        out.write(json.dumps({"id": row.get("id"), "score": round(score, 6), "route": decide(score, thresholds)},
                             ensure_ascii=False) + "\n")
    out.flush()
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    thresholds, router_cfg = _thresholds(args.config)
    scorer = _scorer(args, router_cfg)
    score, contributions, grams = scorer.explain([{"role": "user", "content": args.text}])
    route = decide(score, thresholds)
    print(f"score {score:.3f} -> route {route}  (t1 {thresholds.t1:.3f}, t2 {thresholds.t2:.3f})")
    print("  the score is the share of the training requests this one is more complex than")
    moved = sorted((c for c in contributions if abs(c.logit) >= 0.01), key=lambda c: -abs(c.logit))[: args.top]
    if not moved:
        print("  no feature moved it: it scores like an average request")
    for c in moved:
        direction = "towards the cloud" if c.logit > 0 else "towards local"
        print(f"  {c.logit:+.2f}  {c.words}: {direction}")
    if grams:
        shown = ", ".join(f"{g!r} {w:+.2f}" for g, w in grams[:5])
        print(f"  wording that weighed most: {shown}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    thresholds, router_cfg = _thresholds(args.config)
    scorer = _scorer(args, router_cfg)
    with open(args.sample, encoding="utf-8") as fh:
        scores = [scorer.score(row.get("messages") or []) for row in _rows(fh)]
    t2 = threshold_for_share(scores, args.target_cloud_share)
    t1 = t2
    if args.target_think_share is not None:
        t1 = threshold_for_share(scores, min(1.0, args.target_cloud_share + args.target_think_share))
    elif thresholds.t1 <= t2:
        t1 = thresholds.t1
    result = {"t1": round(t1, 6), "t2": round(t2, 6), "requests": len(scores),
              "cloud_share": round(share_above(scores, t2), 4), "think_share": round(share_above(scores, t1)
                                                                                    - share_above(scores, t2), 4)}
    print(json.dumps(result))
    if args.write:
        if not args.config:
            print("qroute route calibrate: --write needs --config FILE", file=sys.stderr)
            return 2
        try:
            write_thresholds(Path(args.config), result["t1"], result["t2"])
        except ConfigError as exc:
            print(f"qroute route calibrate: {exc}", file=sys.stderr)
            return 2
        print(f"wrote router.t1={result['t1']} and router.t2={result['t2']} to {args.config}", file=sys.stderr)
    return 0


def write_thresholds(path: Path, t1: float, t2: float) -> None:
    """Set router.t1/t2 in a YAML config, keeping its comments and layout."""
    set_keys(path, "router", {"t1": t1, "t2": t2})


def cmd_train(args: argparse.Namespace) -> int:
    from router.train import load_labelled, train

    try:
        data = load_labelled(args.data)
        recipe = dict(TRANSFER) if args.recipe == "transfer" else \
            {"c": args.c, "max_ngrams": args.max_ngrams, "correction": args.correction}
        model = train(data, **recipe)
    except (OSError, ValueError) as exc:
        print(f"qroute route train: {exc}", file=sys.stderr)
        return 2
    model.save(args.out)
    print(json.dumps({"model": str(args.out), **model.meta}))
    return 0


def _guarded(cmd: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A bad config, model or sample file is one line on stderr and exit status 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return cmd(args)
        except (ConfigError, OSError, ValueError) as exc:
            print(f"qroute route: {exc}", file=sys.stderr)
            return 2
    return run


def add_route_parser(sub: argparse._SubParsersAction) -> None:
    route = sub.add_parser("route", help="the complexity router: score, explain, calibrate, train")
    rsub = route.add_subparsers(dest="route_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=None, help="gateway YAML config (thresholds, model, dictionary)")
        p.add_argument("--model", default=None, help="model artifact (default: router.model_path or the bundled one)")

    score = rsub.add_parser("score", help='stdin {"id","messages"} lines -> stdout {"id","score","route"} lines')
    common(score)
    score.set_defaults(func=_guarded(cmd_score))

    explain = rsub.add_parser("explain", help="score one text and say what moved it")
    explain.add_argument("text")
    explain.add_argument("--top", type=int, default=6)
    common(explain)
    explain.set_defaults(func=_guarded(cmd_explain))

    calibrate = rsub.add_parser("calibrate", help="thresholds that send a share of a traffic sample to the cloud")
    calibrate.add_argument("--target-cloud-share", type=float, required=True)
    calibrate.add_argument("--target-think-share", type=float, default=None,
                           help="also set t1 so this share goes to local-think")
    calibrate.add_argument("--sample", required=True, help='JSON lines with "messages"')
    calibrate.add_argument("--write", action="store_true", help="write the thresholds into --config")
    common(calibrate)
    calibrate.set_defaults(func=_guarded(cmd_calibrate))

    add_compare_parser(rsub, _guarded)
    add_labels_parser(rsub, _guarded)

    train = rsub.add_parser("train", help="train the complexity model on labelled outcomes")
    train.add_argument("--data", nargs="+", required=True, help='JSON lines {"id","messages","weak","strong"}')
    train.add_argument("--out", default="router-model.json.gz")
    train.add_argument("--c", type=float, default=DEFAULT_C, help="inverse regularisation strength")
    train.add_argument("--max-ngrams", type=int, default=DEFAULT_MAX_NGRAMS,
                       help="character n-grams (0: none; wording helps on a deployment's own traffic, "
                            "it did not transfer to unseen sources)")
    train.add_argument("--correction", type=float, default=None,
                       help="a length prior plus the learned model shrunk to this weight (0: length only); "
                            "default: the learned model alone, for a deployment's own traffic")
    train.add_argument("--recipe", choices=("transfer",), default=None,
                       help=f"transfer: the bundled model's recipe {TRANSFER}, chosen by leaving one labelled "
                            "file out, for data unlike the traffic to route (replaces --c/--max-ngrams/--correction)")
    train.set_defaults(func=_guarded(cmd_train))
