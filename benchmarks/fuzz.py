"""Schema fuzzing: schemathesis generates requests from the gateway's own /openapi.json (valid ones
and deliberately invalid ones) and sends them to a real `qroute serve` on the simulator. Targets:
no 5xx at all, and every error in OpenAI's shape {"error": {"message", "type", "param", "code"}}.

Run: `make bench-fuzz` (or `.venv/bin/python benchmarks/fuzz.py --examples 300`). Writes
benchmarks/results/fuzz.json and fuzz.md, prints the table, and exits 1 when a target is missed.
tests/test_fuzz.py runs the same fuzzer briefly in the normal suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.stack import KEY, RESULTS, Stack  # noqa: E402
from gateway.api.openapi import EXAMPLES  # noqa: E402

SHAPE = {"message", "type", "param", "code"}


@dataclass
class OperationReport:
    label: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


@dataclass
class FuzzReport:
    examples_per_mode: int
    seconds: float = 0.0
    operations: list[OperationReport] = field(default_factory=list)
    server_errors: list[dict[str, Any]] = field(default_factory=list)  # any 5xx
    shape_errors: list[dict[str, Any]] = field(default_factory=list)  # 4xx not in OpenAI's shape

    @property
    def requests(self) -> int:
        return sum(op.requests for op in self.operations)

    def ok(self) -> bool:
        return not self.server_errors and not self.shape_errors

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["requests"] = self.requests
        out["ok"] = self.ok()
        out["operations"] = [{"label": op.label, "requests": op.requests,
                              "statuses": {str(k): v for k, v in sorted(op.statuses.items())}}
                             for op in self.operations]
        return out


def openai_shaped(response: requests.Response) -> bool:
    try:
        err = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(err, dict) and set(err) == SHAPE and isinstance(err["message"], str) \
        and isinstance(err["type"], str)


def _sample(case: Any, response: requests.Response) -> dict[str, Any]:
    plain = case.body is None or isinstance(case.body, (dict, list, str, int, float, bool))
    body = case.body if plain else repr(case.body)
    return {"operation": case.operation.label, "path": case.formatted_path, "query": case.query, "body": body,
            "status": response.status_code, "answer": response.text[:500]}


def fuzz(base: str, examples: int, seed: int | None = 0, key: str = KEY) -> FuzzReport:
    """Every public operation, `examples` valid and `examples` invalid requests each."""
    import schemathesis
    from schemathesis.generation.modes import GenerationMode

    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    report = FuzzReport(examples)
    session = requests.Session()
    headers = {"authorization": f"Bearer {key}"}

    def _send(case: Any, op: OperationReport) -> None:
        # Every request carries the key, so invalid bodies reach validation (auth has tests of its own).
        case.headers = {**(case.headers or {}), **headers}
        response = case.call(base_url=base, session=session, timeout=30)
        op.requests += 1
        op.statuses[response.status_code] += 1
        if response.status_code >= 500:
            report.server_errors.append(_sample(case, response))
        elif response.status_code >= 400 and not openai_shaped(response):
            report.shape_errors.append(_sample(case, response))

    started = time.perf_counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        op = OperationReport(operation.label)
        report.operations.append(op)
        example = EXAMPLES.get(operation.path) if operation.method.lower() == "post" else None
        plans = [(operation.as_strategy(body=example), 1)] if example is not None else []
        plans += [(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), examples),
                  (operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), examples)]
        for strategy, count in plans:
            _run(strategy, count, seed, lambda case, op=op: _send(case, op))
    report.seconds = time.perf_counter() - started
    return report


def _run(strategy: Any, count: int, seed: int | None, send: Any) -> None:
    """Up to `count` cases from the strategy, each sent; no shrinking (failures are collected, not raised)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=seed is not None)
    @given(case=strategy)
    def run(case: Any) -> None:
        send(case)

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid (an operation without parameters or body)


def markdown(report: FuzzReport) -> str:
    lines = ["# Schema fuzzing (schemathesis against /openapi.json)", "",
             f"{report.requests} requests, {report.examples_per_mode} valid and {report.examples_per_mode} invalid "
             f"examples per operation, {report.seconds:.0f} s on {platform.node() or 'this machine'} "
             f"({platform.machine()}, Python {platform.python_version()}).", "",
             f"- 5xx answers: **{len(report.server_errors)}** (target 0)",
             f"- errors not in OpenAI's shape: **{len(report.shape_errors)}** (target 0)", "",
             "| operation | requests | statuses |", "|---|---:|---|"]
    for op in report.operations:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(op.statuses.items()))
        lines.append(f"| `{op.label}` | {op.requests} | {statuses} |")
    bad = (("5xx answers", report.server_errors), ("Errors not in OpenAI's shape", report.shape_errors))
    for title, samples in bad:
        if samples:
            lines += ["", f"## {title} (first 5)", ""]
            lines += [f"- `{s['operation']}` {s['status']}: `{json.dumps(s['body'])[:200]}` -> `{s['answer'][:200]}`"
                      for s in samples[:5]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="valid and invalid examples per operation (300)")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis derandomised (default); -1: random")
    parser.add_argument("--out", default=str(RESULTS / "fuzz"), help="results path without suffix")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qroute-fuzz-") as tmp:
        stack = Stack(Path(tmp))
        try:
            stack.start()
            report = fuzz(stack.bases()[0], args.examples, None if args.seed < 0 else args.seed)
        finally:
            stack.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    text = markdown(report)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
