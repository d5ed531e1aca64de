"""The `qroute` command: serve, sim, demo. Flags here are contracts other tools drive."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.settings import CONFIG_ENV, LOG_FORMAT, WORKERS_ENV, ConfigError, Settings, load_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"qroute: {exc}", file=sys.stderr)
        return 2
    host = args.host or settings.server.host
    port = args.port or settings.server.port
    problem = preflight(settings)
    if problem:
        print(f"qroute: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.server.log_level.upper(), format=LOG_FORMAT)
    try:
        app = create_app(settings)  # with several workers, only to fail here, once, on a bad config
    except (ValueError, OSError) as exc:
        print(f"qroute: invalid configuration: {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": settings.server.log_level, "loop": "uvloop",
        "access_log": settings.server.log_level == "debug",
        "timeout_graceful_shutdown": settings.server.shutdown_grace_s, **server_options(settings)}
    if args.workers <= 1:
        uvicorn.run(app, **options)
        return 0
    # Worker processes import the protocol by name and read its limits from their config file.
    options["http"] = "gateway.http_protocol:WorkerHttpProtocol"
    uneven = [f"{name} {cfg.max_concurrent}" for name, cfg in settings.backends.items()
              if cfg.max_concurrent is not None and cfg.max_concurrent % args.workers]
    if uneven:
        logging.getLogger("qroute").warning(
            "max_concurrent is split over %d workers, each admitting its whole share: %s admit fewer in all "
            "(at least 1 per worker)", args.workers, ", ".join(uneven))
    with worker_environment(Path(args.config).resolve(), settings.metrics.multiproc_dir, port, args.workers):
        uvicorn.run("gateway.app:app_from_environment", factory=True, workers=args.workers, **options)
    return 0


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options from `server:`: the bounded HTTP protocol (header deadline and limits,
    OpenAI-shaped errors) and the keep-alive timeout. Tests start servers with the same."""
    from gateway.http_protocol import HttpLimits, protocol_class

    return {"http": protocol_class(HttpLimits.of(settings.server)), "timeout_keep_alive": settings.server.keep_alive_s}


@contextlib.contextmanager
def worker_environment(config: Path, metrics_dir: str | None, port: int, workers: int = 1) -> Iterator[None]:
    """What worker processes read at start: the config path, how many workers share the backends'
    admission, and prometheus-client's multiprocess folder. Each gateway instance gets a folder of its
    own (a new one unless configured), emptied first, so a restart or a second instance on the same host
    never mixes or wipes counts."""
    own = metrics_dir is None
    folder = Path(tempfile.mkdtemp(prefix=f"qroute-metrics-{port}-")) if own else Path(str(metrics_dir))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()
    os.environ[CONFIG_ENV] = str(config)
    os.environ[WORKERS_ENV] = str(workers)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    try:
        yield
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def preflight(settings: Settings) -> str | None:
    """What would make start-up fail, found before any server or connection exists, in one line."""
    from retrieval.errors import RetrievalError
    from retrieval.index import read_manifest

    if settings.retrieval.index:
        try:
            read_manifest(settings.retrieval.index)
        except RetrievalError as exc:
            return f"retrieval.index: {exc}"
    return None


def _sim(args: argparse.Namespace) -> int:
    from simulator.server import SimOptions, serve

    opts = SimOptions(
        host=args.host, local_port=args.local_port, cloud_port=args.cloud_port, zero_delay=args.zero_delay,
        local_ttft_s=args.local_ttft, local_tps=args.local_tps, cloud_ttft_s=args.cloud_ttft,
        cloud_tps=args.cloud_tps, output_tokens=args.output_tokens, error_rate=args.error_rate,
        error_status=args.error_status, cut_after_tokens=args.cut_after, hang_after_tokens=args.hang_after,
        vllm_reasoning_field=args.vllm_reasoning_field, local_max_running=args.local_max_running,
        local_total_tps=args.local_total_tps,
        local_weak_on=tuple(k.strip() for k in (args.local_weak_on or "").split(",") if k.strip()),
    )
    logging.basicConfig(level="WARNING", format=LOG_FORMAT)
    try:
        asyncio.run(serve(opts))
    except KeyboardInterrupt:
        pass
    return 0


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args.config, exit_after_table=args.exit)


def _key_id(args: argparse.Namespace) -> int:
    from gateway.limits import key_id

    key = args.key if args.key != "-" else sys.stdin.readline().strip()
    if not key:
        print("qroute key-id: give a key (or - to read it from stdin)", file=sys.stderr)
        return 2
    print(key_id(key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qroute", description="Complexity-routing LLM gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", required=True, help="YAML config file")
    serve.add_argument("--host", default=None, help="bind address (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: server.port, 4000)")
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (default 1); /metrics sums them (prometheus-client multiprocess mode)")
    serve.set_defaults(func=_serve)

    sim = sub.add_parser("sim", help="simulated vLLM and DashScope upstreams (tests, demo, benchmarks)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--local-port", type=int, default=8000, help="vLLM-like API port")
    sim.add_argument("--cloud-port", type=int, default=8001, help="DashScope-like API port")
    sim.add_argument("--zero-delay", action="store_true", help="no first-token delay, no pacing (benchmarks)")
    sim.add_argument("--local-ttft", type=float, default=None, help="local seconds to first token (0.09)")
    sim.add_argument("--local-tps", type=float, default=None, help="local tokens per second (75)")
    sim.add_argument("--cloud-ttft", type=float, default=None, help="cloud seconds to first token (1.0)")
    sim.add_argument("--cloud-tps", type=float, default=None, help="cloud tokens per second (30)")
    sim.add_argument("--output-tokens", type=int, default=None, help="answer length in tokens (48)")
    sim.add_argument("--error-rate", type=float, default=None, help="share of requests that fail (0)")
    sim.add_argument("--error-status", type=int, default=None, help="status of those failures (500)")
    sim.add_argument("--cut-after", type=int, default=None, help="drop streams after N tokens")
    sim.add_argument("--hang-after", type=int, default=None, help="stop sending after N tokens")
    sim.add_argument("--vllm-reasoning-field", choices=["reasoning", "reasoning_content"], default=None,
                     help="vLLM >= 0.11 sends 'reasoning' (default); older versions 'reasoning_content'")
    sim.add_argument("--local-max-running", type=int, default=None,
                     help="local requests running at once; the rest wait, as with vLLM's --max-num-seqs (0: no limit)")
    sim.add_argument("--local-total-tps", type=float, default=None,
                     help="local decode tokens/s shared by the running requests (0: no limit)")
    sim.add_argument("--local-weak-on", default=None, metavar="WORDS",
                     help="comma-separated keywords: local answers to requests with one are weak, and the "
                          "simulated judge prefers the cloud's (exercises shadow labelling)")
    sim.set_defaults(func=_sim)

    from gateway.commands.bench import add_bench_parser
    from gateway.commands.cost import add_cost_parser
    from gateway.commands.index import add_retrieval_parsers
    from gateway.commands.report import add_report_parser
    from gateway.commands.route import add_route_parser

    add_route_parser(sub)
    add_retrieval_parsers(sub)
    add_cost_parser(sub)
    add_report_parser(sub)
    add_bench_parser(sub)

    kid = sub.add_parser("key-id", help="the id a client key is known by in limits: and in Redis (never the key)")
    kid.add_argument("key", help="the client key, or - to read it from stdin (keeps it out of shell history)")
    kid.set_defaults(func=_key_id)

    demo = sub.add_parser("demo", help="start simulators and gateway, send sample queries, print a table")
    demo.add_argument("--config", default="deploy/qroute.demo.yaml")
    demo.add_argument("--exit", action="store_true", help="exit after the table (also DEMO_EXIT=1)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
