"""Real servers on loopback: both simulators and the gateway run under uvicorn in threads, and
tests talk to the gateway with the real `openai` SDK (or httpx for raw wire checks)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from gateway.app import create_app
from gateway.settings import Settings, load_settings
from simulator.app import SimulatedUpstream
from simulator.behaviour import Behaviour
from simulator.harness import ServerThread, free_port

__all__ = ["ServerThread", "free_port"]

CLIENT_KEY = "sk-test-client"
ADMIN_KEY = "sk-test-admin"


def sim_behaviour(flavour: str) -> Behaviour:
    return Behaviour.for_flavour(flavour, zero_delay=True)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def local_sim() -> Iterator[tuple[SimulatedUpstream, ServerThread]]:
    sim = SimulatedUpstream(sim_behaviour("vllm"))
    with ServerThread(sim) as server:
        yield sim, server


@pytest.fixture(scope="session")
def cloud_sim() -> Iterator[tuple[SimulatedUpstream, ServerThread]]:
    sim = SimulatedUpstream(sim_behaviour("dashscope"))
    with ServerThread(sim) as server:
        yield sim, server


@pytest.fixture(autouse=True)
def reset_sims(request: pytest.FixtureRequest) -> None:
    """Every test starts from fast, healthy simulators with empty request logs."""
    for name in ("local_sim", "cloud_sim"):
        if name in request.fixturenames:
            sim, _ = request.getfixturevalue(name)
            sim.behaviour = sim_behaviour(sim.behaviour.flavour)
            sim.received.clear()
            sim.stats = dict.fromkeys(sim.stats, 0)


def config_dict(local_base: str, cloud_base: str, state_file: str | None = None, **overrides: Any) -> dict[str, Any]:
    timeouts = {"connect_s": 0.5, "first_token_s": 1.0, "idle_s": 1.0, "total_s": 10}
    cfg: dict[str, Any] = {
        "auth": {"api_keys": [CLIENT_KEY], "api_keys_env": None},
        "server": {"max_body_bytes": 64 * 1024},
        "backends": {
            "vllm-local": {"provider": "hosted_vllm", "model": "Qwen/Qwen3-8B", "api_base": f"{local_base}/v1",
                           "timeouts": timeouts},
            "dashscope": {"provider": "dashscope", "model": "qwen3-235b-a22b", "api_base": f"{cloud_base}/v1",
                          "api_key_env": "QROUTE_TEST_DASHSCOPE_KEY", "timeouts": timeouts},
        },
        "routes": {
            "local": {"backend": "vllm-local", "thinking": False},
            "local-think": {"backend": "vllm-local", "thinking": True},
            "cloud": {"backend": "dashscope", "thinking": False},
        },
        "breaker": {"failure_threshold": 1000, "reset_after_s": 10},
        "prices": {"Qwen/Qwen3-8B": {"input": 0, "output": 0}, "qwen3-235b-a22b": {"input": 4, "output": 8}},
        "router": {"state_file": state_file},
    }
    for key, value in overrides.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def settings_from(tmp_path: Path, cfg: dict[str, Any]) -> Settings:
    path = tmp_path / f"qroute-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return load_settings(path)


class RunningGateway:
    def __init__(self, server: ServerThread, app: Any) -> None:
        self.server = server
        self.app = app
        self.base = server.base
        self.client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=10)
        self.http = httpx.Client(base_url=server.base, timeout=10,
                                 headers={"authorization": f"Bearer {CLIENT_KEY}"})

    def close(self) -> None:
        self.http.close()
        self.client.close()


def start_gateway(settings: Settings) -> tuple[ServerThread, RunningGateway]:
    app = create_app(settings)
    server = ServerThread(app).__enter__()
    return server, RunningGateway(server, app)


@pytest.fixture(scope="session")
def gateway(local_sim, cloud_sim, tmp_path_factory, monkeypatch_session) -> Iterator[RunningGateway]:
    monkeypatch_session.setenv("QROUTE_TEST_DASHSCOPE_KEY", "sk-upstream-secret-123")
    # Shared by many tests: no spill-over, or one test's injected 503s would move the next one's auto traffic.
    settings = settings_from(tmp_path_factory.mktemp("cfg"), config_dict(local_sim[1].base, cloud_sim[1].base,
                                                                         spill={"enabled": False}))
    monkeypatch_session.setenv("QROUTE_ADMIN_KEYS", ADMIN_KEY)
    server, running = start_gateway(settings)
    yield running
    running.close()
    server.__exit__()


@pytest.fixture(scope="session")
def monkeypatch_session() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture
def make_gateway(local_sim, cloud_sim, tmp_path) -> Iterator[Any]:
    """Start a gateway with config overrides, for tests that need their own breaker or backends."""
    started: list[tuple[ServerThread, RunningGateway]] = []

    def make(**overrides: Any) -> RunningGateway:
        cfg = config_dict(local_sim[1].base, cloud_sim[1].base, **overrides)
        server, running = start_gateway(settings_from(tmp_path, cfg))
        started.append((server, running))
        return running

    yield make
    for server, running in started:
        running.close()
        server.__exit__()


def user(text: str = "hello") -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]
