"""Run the vLLM-like and DashScope-like simulators side by side in one process."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import uvicorn

from simulator.app import SimulatedUpstream
from simulator.behaviour import Behaviour


@dataclass(frozen=True)
class SimOptions:
    host: str = "127.0.0.1"
    local_port: int = 8000
    cloud_port: int = 8001
    zero_delay: bool = False
    local_ttft_s: float | None = None
    local_tps: float | None = None
    cloud_ttft_s: float | None = None
    cloud_tps: float | None = None
    output_tokens: int | None = None
    error_rate: float | None = None
    error_status: int | None = None
    cut_after_tokens: int | None = None
    hang_after_tokens: int | None = None
    vllm_reasoning_field: str | None = None
    local_max_running: int | None = None  # the local (vLLM) simulator's capacity model
    local_total_tps: float | None = None
    local_weak_on: tuple[str, ...] = ()  # keywords the local model answers weakly (judged worse)


def build_upstreams(opts: SimOptions) -> tuple[SimulatedUpstream, SimulatedUpstream]:
    common = {
        "output_tokens": opts.output_tokens,
        "error_rate": opts.error_rate,
        "error_status": opts.error_status,
        "cut_after_tokens": opts.cut_after_tokens,
        "hang_after_tokens": opts.hang_after_tokens,
    }
    local = Behaviour.for_flavour(
        "vllm", opts.zero_delay, ttft_s=opts.local_ttft_s, tokens_per_s=opts.local_tps,
        reasoning_field=opts.vllm_reasoning_field, max_running=opts.local_max_running,
        total_tokens_per_s=opts.local_total_tps, weak_on=list(opts.local_weak_on), **common,
    )
    cloud = Behaviour.for_flavour(
        "dashscope", opts.zero_delay, ttft_s=opts.cloud_ttft_s, tokens_per_s=opts.cloud_tps, **common
    )
    return SimulatedUpstream(local), SimulatedUpstream(cloud)


def uvicorn_server(app: SimulatedUpstream, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
        loop="uvloop", http="httptools", timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


async def serve(opts: SimOptions) -> None:
    local, cloud = build_upstreams(opts)
    servers = [
        uvicorn_server(local, opts.host, opts.local_port),
        uvicorn_server(cloud, opts.host, opts.cloud_port),
    ]
    logging.getLogger("qroute.sim").warning(
        "simulated vLLM on http://%s:%d/v1, DashScope on http://%s:%d/v1",
        opts.host, opts.local_port, opts.host, opts.cloud_port,
    )
    await asyncio.gather(*(s.serve() for s in servers))
