"""`qroute bench`: the capacity of an OpenAI-compatible endpoint (a vLLM, or the gateway with a pinned
route such as `--model local`) at several concurrency levels, its knee, and the admission setting for
the gateway's backend. A progress bar on stderr, a table on stdout, the JSON file and a PNG chart.

The flags `--base-url --model --concurrency --requests --out` are contracts other tools drive; so is the
JSON shape (gateway/capacity.py: BenchResult.to_json) and the `backends.<NAME>.max_concurrent: K` line.
Errors (refused, 4xx/5xx on the first request, bad flags) are one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # imported when the command runs: `qroute`'s other commands start without aiohttp
    from gateway.capacity import BenchResult, BenchSpec, LevelStats, Limits

API_KEY_ENV = "QROUTE_BENCH_API_KEY"
DEFAULT_LEVELS = "1,2,3,5,8,13"
DEFAULT_BACKEND = "vllm-local"


class FlagError(ValueError):
    pass


# --- flags --------------------------------------------------------------------------------------

def parse_levels(text: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise FlagError(f"--concurrency {text!r}: expected positive integers separated by commas, e.g. 1,2,4,8"
                        ) from None
    if not levels or any(c < 1 for c in levels):
        raise FlagError(f"--concurrency {text!r}: expected positive integers separated by commas, e.g. 1,2,4,8")
    if list(levels) != sorted(set(levels)):
        raise FlagError(f"--concurrency {text!r}: levels must be increasing, each once")
    return levels


def spec_from_args(args: argparse.Namespace) -> tuple[BenchSpec, Limits]:
    """The benchmark and its limits from the flags; FlagError (one line) for anything unusable."""
    from gateway.capacity import BenchSpec, Limits

    if not args.base_url.startswith(("http://", "https://")):
        raise FlagError(f"--base-url {args.base_url!r}: expected http://host:port/v1")
    levels = parse_levels(args.concurrency)
    for name, value, low in (("--requests", args.requests, 1), ("--max-tokens", args.max_tokens, 1),
                             ("--warmup", args.warmup, 0)):
        if value < low:
            raise FlagError(f"{name} {value}: must be at least {low}")
    for name, limit in (("--max-ttft-p95", args.max_ttft_p95), ("--min-tokens-per-s", args.min_tokens_per_s),
                        ("--timeout", args.timeout)):
        if limit is not None and not limit > 0:
            raise FlagError(f"{name} {limit:g}: must be above 0")
    if args.prompt is not None and args.prompt_file is not None:
        raise FlagError("give --prompt or --prompt-file, not both")
    prompt = args.prompt
    if args.prompt_file is not None:
        try:
            prompt = Path(args.prompt_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise FlagError(f"--prompt-file {args.prompt_file}: {exc}") from None
    if prompt is not None and not prompt.strip():
        raise FlagError("the prompt is empty")
    extra: dict[str, Any] = {}
    if args.extra_body:
        try:
            extra = json.loads(args.extra_body)
        except json.JSONDecodeError as exc:
            raise FlagError(f"--extra-body: not JSON ({exc})") from None
        if not isinstance(extra, dict):
            raise FlagError("--extra-body: expected a JSON object")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    spec = BenchSpec(base_url=args.base_url, model=args.model, levels=levels, requests=args.requests,
                     api_key=api_key, max_tokens=args.max_tokens, warmup=args.warmup, timeout_s=args.timeout,
                     extra_body=extra, **({"prompt": prompt} if prompt is not None else {}))
    return spec, Limits(max_ttft_p95_s=args.max_ttft_p95, min_tokens_per_s=args.min_tokens_per_s)


def png_path(args: argparse.Namespace) -> Path:
    return Path(args.png) if args.png else Path(args.out).with_suffix(".png")


# --- output -------------------------------------------------------------------------------------

def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _within(level: LevelStats) -> str:
    if level.within_limits:
        return "yes"
    reasons = []
    for reason in level.outside:
        reasons.append("errors" if "error" in reason else "ttft" if reason.startswith("TTFT") else
                       "tok/s" if reason.startswith("tokens/s") else reason)
    return "no: " + ", ".join(reasons)


COLUMNS = (("concurrency", 11), ("requests", 9), ("errors", 7), ("ttft p50 s", 11), ("ttft p95 s", 11),
           ("tok/s/req p50", 14), ("total tok/s", 12), ("latency p50 s", 14), ("within", 0))


def table_rows(result: BenchResult) -> list[list[str]]:
    return [[str(lv.concurrency), str(lv.requests), str(lv.errors), _num(lv.ttft_p50_s, ".3f"),
             _num(lv.ttft_p95_s, ".3f"), _num(lv.tokens_per_s_p50, ".1f"), f"{lv.throughput_tokens_per_s:.1f}",
             _num(lv.latency_p50_s, ".3f"), _within(lv)] for lv in result.levels]


def setting_lines(result: BenchResult, backend: str) -> list[str]:
    """The admission setting to paste under the gateway's backend (none when no level is within)."""
    s = result.suggestion(backend)
    if s["max_concurrent"] is None:
        return [f"no max_concurrent to suggest for backends.{backend}: no level is within the limits"]
    note = "  # at least: the knee is above the largest level tried" if result.knee.status == "above-range" else ""
    lines = [f"backends.{backend}.max_concurrent: {s['max_concurrent']}{note}"]
    if s["max_queue_wait_s"] is not None:
        lines.append(f"backends.{backend}.max_queue_wait_s: {s['max_queue_wait_s']:g}"
                     "  # the TTFT budget the knee's p95 leaves for waiting in the gateway's queue")
    return lines


def format_table(result: BenchResult, backend: str) -> str:
    spec = result.spec
    lines = [f"qroute bench: {spec.url}, model {spec.model}, {spec.requests} requests per level, "
             f"max_tokens {spec.max_tokens}", ""]
    header = "".join(f"{name:>{width}}" if width else f"  {name}" for name, width in COLUMNS)
    lines += [header, "-" * len(header)]
    for row in table_rows(result):
        lines.append("".join(f"{cell:>{width}}" if width else f"  {cell}" for cell, (_, width) in zip(
            row, COLUMNS, strict=True)))
    lines.append("")
    lines.append(f"limits: {result.limits.describe()}"
                 + ("" if result.limits.source == "given" else f" ({result.limits.source})"))
    if result.first_error:
        lines.append(f"first error: {result.first_error}")
    lines.append(f"knee: {result.knee.message}")
    lines += [f"note: {n}" for n in result.knee.notes]
    lines.append("suggested admission setting:")
    lines += [f"  {line}" for line in setting_lines(result, backend)]
    return "\n".join(lines)


def format_markdown(result: BenchResult, backend: str, command: str | None = None) -> str:
    """The table and the knee as Markdown; `command`: how it was run, already formatted."""
    spec = result.spec
    lines = ["# Capacity: concurrency against time to first token and tokens/s", ""]
    if command:
        lines += [f"Command: {command}", ""]
    lines += [f"Endpoint `{spec.url}`, model `{spec.model}`, {spec.requests} streamed requests per level, "
              f"max_tokens {spec.max_tokens}, run {result.started_at} ({result.duration_s:.1f} s).", "",
              "| " + " | ".join(name for name, _ in COLUMNS) + " |",
              "|" + "|".join("---:" if width else "---" for _, width in COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    lines += ["", f"Limits: {result.limits.describe()}"
              + ("." if result.limits.source == "given" else f" ({result.limits.source})."), "",
              f"**Knee**: {result.knee.message}.", ""]
    lines += [f"Note: {n}." for n in result.knee.notes]
    lines += ["Suggested admission setting (under `backends.<name>:` in the gateway's config):", "", "```text",
              *setting_lines(result, backend), "```", ""]
    return "\n".join(lines)


def write_chart(result: BenchResult, out: str | Path) -> None:
    """TTFT p50/p95, and per-request and total tokens/s, against concurrency; the limits dashed, the knee
    marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result.levels
    xs = [lv.concurrency for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    spec = result.spec
    fig.suptitle(f"qroute bench: {spec.model} at {spec.url}\n{spec.requests} requests per level, "
                 f"max_tokens {spec.max_tokens}", fontsize=11)

    def points(attr: str) -> tuple[list[int], list[float]]:
        pairs = [(lv.concurrency, getattr(lv, attr)) for lv in levels if getattr(lv, attr) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    left.plot(*points("ttft_p50_s"), "o-", label="TTFT p50")
    left.plot(*points("ttft_p95_s"), "s-", label="TTFT p95")
    if result.limits.max_ttft_p95_s is not None:
        left.axhline(result.limits.max_ttft_p95_s, color="tab:red", linestyle="--", linewidth=1,
                     label=f"limit {result.limits.max_ttft_p95_s:g} s")
    left.set_ylabel("seconds to first token")
    left.set_title("Time to first token")

    right.plot(*points("tokens_per_s_p50"), "o-", color="tab:green", label="per request, p50")
    if result.limits.min_tokens_per_s is not None:
        right.axhline(result.limits.min_tokens_per_s, color="tab:red", linestyle="--", linewidth=1,
                      label=f"limit {result.limits.min_tokens_per_s:g}")
    right.set_ylabel("tokens/s per request")
    right.set_title("Decode speed")
    total = right.twinx()
    total.plot(xs, [lv.throughput_tokens_per_s for lv in levels], "^-", color="tab:purple", label="total")
    total.set_ylabel("total tokens/s")
    total.set_ylim(bottom=0)
    right.set_ylim(bottom=0)

    knee = result.knee.concurrency
    for ax in (left, right):
        ax.set_xlabel("concurrent requests")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        if knee is not None:
            label = f"knee: {knee}" + (" (or higher)" if result.knee.status == "above-range" else "")
            ax.axvline(knee, color="tab:orange", linewidth=2, alpha=0.7, label=label)
    left.set_ylim(bottom=0)
    left.legend(fontsize=8)
    handles, labels = right.get_legend_handles_labels()
    more_handles, more_labels = total.get_legend_handles_labels()
    right.legend(handles + more_handles, labels + more_labels, loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --- the command --------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> tuple[int, BenchResult | None]:
    """The whole command; the exit status and (when it ran) the result."""
    from tqdm import tqdm

    from gateway.capacity import BenchError, bench

    try:
        spec, limits = spec_from_args(args)
    except FlagError as exc:
        return _fail(str(exc)), None
    out, png = Path(args.out), png_path(args)
    for path in (out, png):
        if not path.parent.is_dir():
            return _fail(f"{path}: folder {path.parent} does not exist"), None
    total = sum(max(spec.requests, c) for c in spec.levels)
    bar = tqdm(total=total, unit="req", file=sys.stderr, disable=True if args.no_progress else None,
               dynamic_ncols=True, leave=False)
    try:
        result = bench(spec, limits, on_done=lambda: bar.update(1),
                       on_level=lambda c: bar.set_description(f"concurrency {c}"))
    except BenchError as exc:
        bar.close()
        return _fail(str(exc)), None
    except KeyboardInterrupt:
        bar.close()
        return _fail("interrupted"), None
    bar.close()
    try:
        out.write_text(json.dumps(result.to_json(args.backend), indent=2) + "\n", encoding="utf-8")
        write_chart(result, png)
    except OSError as exc:
        return _fail(str(exc)), None
    print(format_table(result, args.backend))
    print(f"results written to {out}, chart to {png}", file=sys.stderr)
    return 0, result


def _fail(message: str) -> int:
    print(f"qroute bench: {' '.join(message.split())}", file=sys.stderr)
    return 2


def cmd_bench(args: argparse.Namespace) -> int:
    return run(args)[0]


def add_bench_arguments(parser: argparse.ArgumentParser, out_default: str, require_target: bool = True) -> None:
    """The flags, shared with benchmarks/capacity.py."""
    parser.add_argument("--base-url", required=require_target, default=None,
                        help="the endpoint's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 (a vLLM) or "
                             "http://127.0.0.1:4000/v1 (the gateway)")
    parser.add_argument("--model", required=require_target, default=None,
                        help="model to ask for: Qwen/Qwen3-8B at a vLLM; a pinned route such as `local` at the gateway")
    parser.add_argument("--concurrency", default=DEFAULT_LEVELS,
                        help=f"concurrency levels, increasing, comma-separated (default {DEFAULT_LEVELS})")
    parser.add_argument("--requests", type=int, default=32,
                        help="requests per level (default 32; at least the level's concurrency are sent)")
    parser.add_argument("--out", default=out_default, help=f"JSON results file (default {out_default})")
    parser.add_argument("--png", default=None, help="PNG chart (default: --out with .png)")
    parser.add_argument("--api-key", default=None,
                        help=f"bearer key for the endpoint (default: ${API_KEY_ENV}; never written to the results)")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of each request (default 128)")
    prompt = parser.add_argument_group("prompt (each request gets its own first line, so no cache makes it fast)")
    prompt.add_argument("--prompt", default=None, help="the user message (default: a fixed ~40-word question)")
    prompt.add_argument("--prompt-file", default=None, help="read the user message from this file")
    parser.add_argument("--extra-body", default=None,
                        help='JSON merged into each request body, e.g. \'{"ignore_eos": true}\' at a vLLM')
    limits = parser.add_argument_group("limits (the knee: the highest level within both; neither given: "
                                       "2x the p95 TTFT and 0.8x the tokens/s of the lowest level)")
    limits.add_argument("--max-ttft-p95", type=float, default=None, metavar="S",
                        help="highest acceptable p95 time to first token, seconds")
    limits.add_argument("--min-tokens-per-s", type=float, default=None, metavar="N",
                        help="lowest acceptable p50 tokens per second per request")
    parser.add_argument("--backend", default=DEFAULT_BACKEND,
                        help=f"the gateway backend to name in the suggested setting (default {DEFAULT_BACKEND})")
    parser.add_argument("--warmup", type=int, default=1,
                        help="requests before the levels, not measured; the first must be answered (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request (default 300)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown only on a terminal)")


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """argparse's own errors (a missing or unknown flag, a bad number) as one line on stderr, exit 2."""
    base = parser.parse_known_args

    def error(message: str) -> NoReturn:
        print(f"{parser.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = base(args, namespace)
        if extras:  # a subcommand's unknown flags would otherwise reach the top parser's usage dump
            error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    parser.error = error  # type: ignore[method-assign]
    parser.parse_known_args = parse_known_args  # type: ignore[method-assign,assignment]


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench_parser = sub.add_parser(
        "bench", help="capacity at several concurrency levels: TTFT, tokens/s, the knee, max_concurrent",
        description="Measure an OpenAI-compatible endpoint at several concurrency levels (streamed requests): "
                    "TTFT p50/p95, per-request tokens/s, total tokens/s, errors; name the knee and print "
                    "the gateway's admission setting. Errors: one line on stderr, exit 2.")
    add_bench_arguments(bench_parser, out_default="capacity.json")
    one_line_errors(bench_parser)
    bench_parser.set_defaults(func=cmd_bench)
