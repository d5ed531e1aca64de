"""Capacity: concurrency against time to first token and tokens/s, the knee, and `max_concurrent`.

A thin wrapper over `qroute bench` (gateway/commands/bench.py, gateway/capacity.py) with the same flags,
writing benchmarks/results/capacity.json, capacity.png and capacity.md by default.

With --base-url, it measures that endpoint (a vLLM, or the gateway with a pinned route, `--model local`).

Without --base-url, it starts `qroute sim` on free ports with the sample capacity model and measures its
vLLM flavour; that is how the committed sample (benchmarks/results/capacity.*) was made (`make
bench-capacity`). By hand, the same is:

    qroute sim --local-port 8000 --local-ttft 0.09 --local-tps 75 --local-total-tps 225 --local-max-running 8
    python benchmarks/capacity.py --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-8B \\
        --concurrency 1,2,3,5,8,13 --requests 26 --max-tokens 48 --max-ttft-p95 0.5 --min-tokens-per-s 60 \\
        --extra-body '{"chat_template_kwargs": {"enable_thinking": false}}'

The sample capacity model: 0.09 s to first token and 75 tokens/s per request, the reference A100's figures
at low concurrency; 225 tokens/s of decode shared by the running requests (so from 4 running each gets
less than 75) and at most 8 running (the rest wait), which are assumptions chosen to resemble the
reference's hand-picked balance point of 3, not measurements. The sample shows the mechanics (queueing,
shared throughput, the knee, the setting), not an A100's capacity: measure the real vLLM for that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.commands.bench import add_bench_arguments, format_markdown, one_line_errors, run  # noqa: E402
from simulator.harness import free_port  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SIM_MODEL = {"--local-ttft": "0.09", "--local-tps": "75", "--local-total-tps": "225", "--local-max-running": "8"}
SIM_DEFAULTS = {"model": "Qwen/Qwen3-8B", "requests": 26, "max_tokens": 48, "max_ttft_p95": 0.5,
                "min_tokens_per_s": 60.0, "extra_body": '{"chat_template_kwargs": {"enable_thinking": false}}'}


@contextlib.contextmanager
def simulator() -> Iterator[tuple[str, list[str]]]:
    """`qroute sim` with the sample capacity model on free ports: its vLLM base URL and command line."""
    local, cloud = free_port(), free_port()
    command = [str(Path(sys.executable).parent / "qroute"), "sim", "--local-port", str(local),
               "--cloud-port", str(cloud), *[part for flag in SIM_MODEL.items() for part in flag]]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{local}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/health", timeout=1):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"qroute sim did not start: {log.read().decode()[-500:]}") from None
                    time.sleep(0.1)
            yield f"{base}/v1", command
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/capacity.py", description=__doc__.split("\n\n")[0])
    add_bench_arguments(p, out_default=str(RESULTS / "capacity.json"), require_target=False)
    one_line_errors(p)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = parser()
    args = p.parse_args(argv)
    if args.base_url is None:  # the sample: the simulator, with the sample's defaults for flags not given
        p.set_defaults(**SIM_DEFAULTS)
        args = p.parse_args(argv)
        with simulator() as (base_url, sim_command):
            args.base_url = base_url
            code, result = run(args)
        sim_line = shlex.join(["qroute", *sim_command[1:]])
    else:
        if args.model is None:
            print("benchmarks/capacity.py: --model is required with --base-url", file=sys.stderr)
            return 2
        code, result = run(args)
        sim_line = None
    if result is None:
        return code
    out = Path(args.out)
    data = json.loads(out.read_text(encoding="utf-8"))
    if sim_line:
        data["simulator"] = {"command": sim_line, "capacity_model": SIM_MODEL,
                             "note": "ttft and tokens/s per request from the reference A100 figures; the shared "
                                     "225 tokens/s and max 8 running are assumptions, not measurements"}
        out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    bench_line = shlex.join(["python", "benchmarks/capacity.py", *argv])
    command = f"`{bench_line}` (which started `{sim_line}`)" if sim_line else f"`{bench_line}`"
    md = out.with_suffix(".md")
    text = format_markdown(result, args.backend, command)
    if sim_line:
        text += ("\nThe endpoint is `qroute sim` with a capacity model (0.09 s to first token and 75 tokens/s per "
                 "request, as the reference A100 at low concurrency; 225 tokens/s shared and at most 8 running: "
                 "assumptions, not measurements). These figures show the mechanics, not an A100's capacity.\n")
    md.write_text(text, encoding="utf-8")
    print(f"markdown written to {md}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
