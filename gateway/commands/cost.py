"""`qroute cost`: the reference cost analysis, computed from its inputs rather than copied.

Cloud models cost per token; the local GPU costs the same every month, busy or idle; the plan
sends a share of traffic to the cloud and the rest to the GPU. Every figure is derived from the
flags, the config's `prices:` and the local backend's `hardware:` (or the reference's prices and
A100 when no config is given), so a change of price, traffic or hardware is one edit away.
With `--sample`, the router scores real requests to predict route shares, and `--budget-cny-month`
finds the cloud threshold that keeps a month within a budget. Flags and the JSON shape are contracts.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from gateway.cost_plan import MILLION, CostAnalysis, Traffic, amount, analyse, pricing
from gateway.cost_sample import SampleResult, analyse_sample
from gateway.settings import ConfigError

# --- output -----------------------------------------------------------------------------------

def _cny(value: float) -> str:
    return f"{value:,.2f}"


def _opt(value: float | None, fmt: str) -> str:
    return "never" if value is None else format(value, fmt)


def render(a: CostAnalysis) -> str:
    t = a.traffic
    lines = [
        f"qroute cost: {amount(t.calls_per_day)} calls/day x {amount(t.days_per_month)} days = "
        f"{amount(t.calls_per_month)} calls/month; each {t.input_tokens} input + {t.output_tokens} output tokens",
        f"prices: {a.prices_from}; local GPU: {a.local.source}; all amounts in CNY",
        "",
        f"{'option':<40}{'CNY/M in':>9}{'CNY/M out':>10}{'per call':>11}{'per 10k calls':>14}"
        f"{'per month':>12}{'break-even calls/day':>22}",
    ]
    rule = "-" * len(lines[-1])
    lines.append(rule)
    for o in a.cloud:
        lines.append(f"{'cloud ' + o.model:<40}{o.input_cny_per_million:>9.2f}{o.output_cny_per_million:>10.2f}"
                     f"{o.per_call_cny:>11.6f}{o.per_10k_calls_cny:>14.2f}{o.monthly_cny:>12,.2f}"
                     f"{_opt(o.break_even_calls_per_day, ',.0f'):>22}")
    lines.append(f"{'local GPU (fixed, busy or idle)':<40}{'':>9}{'':>10}{'':>11}{'':>14}{a.local.monthly_cny:>12,.2f}")
    pl = a.plan
    name = f"plan: {1 - pl.cloud_share:.0%} local + {pl.cloud_share:.0%} {pl.cloud_model}"
    lines.append(f"{name:<40}{'':>9}{'':>10}{'':>11}{'':>14}{pl.monthly_cny:>12,.2f}")
    lines.append(rule)
    hw = a.local.hardware
    lines += [
        "per call = (input tokens x CNY/M in + output tokens x CNY/M out) / 1,000,000; "
        "per month = per call x calls/day x days/month",
        f"local GPU = {hw['gpus']:g} x ({amount(hw['gpu_price_cny'])} CNY over {hw['amortise_years']:g} years + "
        f"{hw['power_watts']:g} W at {hw['electricity_cny_per_kwh']:g} CNY/kWh) + "
        f"{amount(hw['hosting_cny_per_month'])} CNY/month hosting = {a.local.cny_per_second:.6f} CNY/s = "
        f"{_cny(a.local.monthly_cny)} CNY per month "
        "(a twelfth of a year, whatever --days-per-month says)",
        f"plan = local GPU {_cny(pl.local_cny)} + {pl.cloud_share:g} x {pl.cloud_model} {_cny(pl.all_cloud_cny)} = "
        f"{_cny(pl.monthly_cny)} CNY/month; all-cloud {pl.cloud_model} {_cny(pl.all_cloud_cny)}, saved "
        f"{_cny(pl.saved_cny)}",
        f"  the GPU serves {amount(round(pl.local_calls_per_day))} calls/day x {t.output_tokens} tokens / 86,400 s = "
        f"{pl.local_concurrency * a.local_tokens_per_second:,.0f} tokens/s = {pl.local_concurrency:.2f} requests "
        f"at once on average at {a.local_tokens_per_second:g} tokens/s per request (peaks are higher)",
        f"break-even = local GPU per month / (per call x {amount(t.days_per_month)} days): below it the cloud model "
        "is cheaper; GPU load there:",
    ]
    for o in a.cloud:
        load = _opt(o.break_even_concurrency, ".2f")
        lines.append(f"  {o.model}: {_opt(o.break_even_calls_per_day, ',.0f')} calls/day = {load} requests at "
                     f"once on average")
    lines += ["", "note: " + a.reference_check.note, ""]
    busy = MILLION / a.local_tokens_per_second
    lines += [
        "local cost per million output tokens: the gateway charges a local request its seconds busy / requests "
        f"running at once x {a.local.cny_per_second:.6f} CNY/s, so it depends on concurrency",
        f"  at {a.local_tokens_per_second:g} tokens/s per request a million tokens take {busy:,.0f} s busy",
        f"  {'concurrent':>10}{'CNY/M out':>11}",
    ]
    lines += [f"  {c.concurrent:>10}{c.cny_per_million_output_tokens:>11.2f}" for c in a.concurrency]
    outputs = ", ".join(f"{o.model} {o.output_cny_per_million:g}" for o in a.cloud)
    lines.append(f"  compare the cloud's CNY/M out: {outputs}")
    lines.append("  assumption: throughput per request held constant at every concurrency (it falls as batches "
                 "grow) and prefill not counted; refine with a measured capacity bench")
    lines += [f"note: {n}" for n in a.notes]
    if a.sample is not None:
        lines += ["", *render_sample(a.sample)]
    return "\n".join(lines)


def render_sample(s: SampleResult) -> list[str]:
    lines = [f"sample {s.path}: {s.requests} requests scored by the {s.scorer} router at t1 {s.t1:g}, t2 {s.t2:g}",
             f"  {'route':<13}{'share':>7}{'requests':>10}{'mean prompt tok':>17}  {'priced as':<34}"
             f"{'per month':>12}"]
    for r in s.routes:
        lines.append(f"  {r.route:<13}{r.share:>7.1%}{r.requests:>10}{r.mean_prompt_tokens:>17.1f}  "
                     f"{r.priced_as:<34}{r.monthly_cny:>12,.2f}")
    lines.append(f"  month at these shares: GPUs {_cny(s.fixed_cny)} fixed + per-token routes = "
                 f"{_cny(s.monthly_cny)} CNY (prompt tokens estimated per request, output tokens from "
                 "--output-tokens)")
    b = s.budget
    if b is not None:
        if b.feasible:
            lines.append(f"  budget {_cny(b.budget_cny)} CNY/month: t1 {b.t1:g}, t2 {b.t2:g} send {b.cloud_share:.1%}"
                         f" to the cloud and {b.think_share:.1%} to local-think -> {_cny(b.monthly_cny or 0.0)} "
                         "CNY/month on this sample (the most cloud traffic within the budget)")
            if b.t1 is not None and b.t1 < s.t1:
                lines.append(f"  t1 lowered from {s.t1:g} to t2 (t1 <= t2): requests between them now go to the cloud")
        else:
            lines.append(f"  budget {_cny(b.budget_cny)} CNY/month: no thresholds meet it: {b.note}")
    return lines


def cmd_cost(args: argparse.Namespace) -> int:
    def skip(number: int, reason: str) -> None:
        print(f"qroute cost: {args.sample}: line {number}: {reason}; skipped", file=sys.stderr)

    try:
        if args.budget_cny_month is not None and not args.sample:
            raise ValueError("--budget-cny-month needs --sample FILE")
        p = pricing(args.config)
        traffic = Traffic(args.calls_per_day, args.output_tokens, args.input_tokens, args.days_per_month)
        result = analyse(p, traffic, args.cloud_share, args.local_tokens_per_second)
        if args.sample:
            result = replace(result, sample=analyse_sample(args.sample, p, traffic, args.budget_cny_month, skip))
    except (ConfigError, OSError, ValueError) as exc:
        print(f"qroute cost: {exc}".replace("\n", " "), file=sys.stderr)
        return 2
    print(json.dumps(result.to_json(), ensure_ascii=False, indent=2) if args.json else render(result))
    return 0


def add_cost_parser(sub: argparse._SubParsersAction) -> None:
    cost = sub.add_parser("cost", help="monthly cost: cloud models vs the local GPU vs the local/cloud plan")
    cost.add_argument("--config", default=None,
                      help="gateway YAML config: prices:, the local backend's hardware:, router thresholds "
                           "(default: the reference's prices and A100)")
    cost.add_argument("--calls-per-day", type=float, default=100000)
    cost.add_argument("--output-tokens", type=int, default=200, help="output tokens per call (default 200)")
    cost.add_argument("--input-tokens", type=int, default=0,
                      help="input tokens per call (default 0: the reference counts output tokens only)")
    cost.add_argument("--cloud-share", type=float, default=0.2, help="the plan's share of calls sent to the cloud")
    cost.add_argument("--days-per-month", type=float, default=30)
    cost.add_argument("--local-tokens-per-second", type=float, default=75,
                      help="output tokens/s per request on the local GPU (default 75, the reference's A100)")
    cost.add_argument("--sample", default=None, help='JSON lines with "messages": predicted route shares and cost')
    cost.add_argument("--budget-cny-month", type=float, default=None,
                      help="with --sample: the thresholds that keep the month within this budget")
    cost.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    cost.set_defaults(func=cmd_cost)
