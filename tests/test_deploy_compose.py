"""deploy/compose.yaml without a container engine (this machine's `docker` is a client without the
compose plugin or a daemon): the file, after compose's ${VAR} interpolation, validates against the
Compose Specification's JSON schema (vendored: tests/data/README.md), and cross-checks hold: every
mounted path exists, Prometheus' targets and Grafana's data source name services and the ports they
listen on, the qroute config mounted into the replicas loads with `load_settings` under the replicas'
environment, the vLLM service reserves an NVIDIA GPU and runs start.sh with the reference flags."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from gateway.settings import load_settings
from tests.prometheus_server import binary

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
QROUTE_SERVICES = ("qroute-1", "qroute-2")
DUMMY_ENV = {"DASHSCOPE_API_KEY": "dummy-dashscope", "QROUTE_API_KEYS": "sk-dummy-client",
             "QROUTE_ADMIN_KEYS": "sk-dummy-admin", "VLLM_API_KEY": "dummy-vllm", "HF_ENDPOINT": "https://hf-mirror.com"}

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR:+alt}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("braced") or m.group("plain")
        op, arg = m.group("op"), m.group("arg") or ""
        current = env.get(name)
        unset_or_empty = not current
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else current is None) else str(current)
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else current is None:
                raise ValueError(f"required variable {name}: {arg}")
            return str(current)
        if op in (":+", "+"):
            return arg if not unset_or_empty else ""
        return current or ""

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    return interpolate(raw, DUMMY_ENV)


def test_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_the_schema_catches_mistakes(compose: dict[str, Any]) -> None:
    """The vendored schema is strict enough to be worth running: a typo fails it."""
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    bad = json.loads(json.dumps(compose))
    bad["services"]["redis"]["helthcheck"] = bad["services"]["redis"].pop("healthcheck")
    assert list(validator.iter_errors(bad))
    bad = json.loads(json.dumps(compose))
    bad["services"]["qroute-1"]["depends_on"]["redis"]["condition"] = "healthy"
    assert list(validator.iter_errors(bad))


def test_docker_compose_config_where_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no `docker compose` plugin here: the schema test above stands in for it")
    proc = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                          text=True, env={**DUMMY_ENV, "PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert proc.returncode == 0, proc.stderr


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            out.append((source, target))
    return out


def test_every_mounted_path_exists_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (DEPLOY / source).resolve().exists(), f"{name}: {source} does not exist"
                assert (DEPLOY / source).resolve().is_relative_to(ROOT), f"{name}: {source} is outside the repository"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file()


def test_depends_on_and_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        test = service["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL")
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep]
    for name in QROUTE_SERVICES:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/healthz" in " ".join(services[name]["healthcheck"]["test"])
    assert "/health" in " ".join(services["vllm"]["healthcheck"]["test"])


def container_port(service: dict[str, Any]) -> int:
    args = service.get("command") or []
    args = args + (service.get("entrypoint") or [])
    if "--port" in args:
        return int(args[args.index("--port") + 1])
    ports = service.get("ports") or []
    return int(str(ports[0]).split(":")[-1])


def test_replicas_run_the_same_image_and_config_on_distinct_host_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    host_ports = set()
    for name in QROUTE_SERVICES:
        s = services[name]
        assert s["image"] == services[QROUTE_SERVICES[0]]["image"]
        assert ("./compose/qroute.yaml", "/etc/qroute/qroute.yaml") in bind_mounts(s)
        assert s["command"][:3] == ["serve", "--config", "/etc/qroute/qroute.yaml"]
        assert container_port(s) == 4000
        host_ports.add(s["ports"][0].split(":")[0])
        # keys by name only: no value written in the file
        raw = yaml.safe_load(COMPOSE.read_text())["services"][name]["environment"]
        for key in ("DASHSCOPE_API_KEY", "QROUTE_API_KEYS", "QROUTE_ADMIN_KEYS"):
            assert key in raw and raw[key] is None
    assert len(host_ports) == len(QROUTE_SERVICES)


def test_prometheus_targets_are_compose_services_and_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prom = services["prometheus"]
    mounts = dict(bind_mounts(prom))
    config = yaml.safe_load((DEPLOY / next(s for s, t in mounts.items() if t == "/etc/prometheus/prometheus.yml"))
                            .read_text())
    targets = [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert targets
    scraped = set()
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            assert int(port) == 9090
            continue
        assert host in services, f"target {target}: no service {host}"
        assert int(port) == container_port(services[host]), target
        scraped.add(host)
    assert scraped == {*QROUTE_SERVICES, "vllm"}
    # the rules folder is mounted where rule_files looks
    assert mounts["./prometheus/rules"] == "/etc/prometheus/rules"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def test_promtool_accepts_the_compose_prometheus_config(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]  # where the mount puts them
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([binary("promtool"), "check", "config", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr and "rules found" in proc.stdout + proc.stderr


def test_grafana_mounts_provisioning_and_dashboards(compose: dict[str, Any]) -> None:
    services = compose["services"]
    mounts = dict(bind_mounts(services["grafana"]))
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/qroute.yaml").read_text())
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    url = urlsplit(datasource["datasources"][0]["url"])
    assert url.hostname in services and url.port == 9090
    assert "9090:9090" in services["prometheus"]["ports"]


def test_vllm_service_reserves_a_gpu_and_runs_start_sh_with_the_reference_flags(compose: dict[str, Any]) -> None:
    vllm = compose["services"]["vllm"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert any(target == "/root/.cache/huggingface" for source, target in
               (v.split(":")[:2] for v in vllm["volumes"])), "no model cache volume"
    assert "HF_ENDPOINT" in vllm["environment"]
    entry = vllm["entrypoint"]
    script = dict(bind_mounts(vllm))["./vllm/start.sh"]
    assert entry[:3] == ["bash", script, "--foreground"]
    # a name without a value takes the value of the environment compose runs in
    given = {k: DUMMY_ENV.get(k) if v is None else str(v) for k, v in vllm["environment"].items()}
    env = {k: v for k, v in given.items() if v is not None} | {"PATH": "/usr/bin:/bin"}
    proc = subprocess.run(["bash", str(DEPLOY / "vllm/start.sh"), *entry[2:], "--dry-run"], env=env,
                          capture_output=True, text=True, check=True)
    for flag in ("serve Qwen/Qwen3-8B", "--served-model-name Qwen/Qwen3-8B", "--gpu-memory-utilization 0.90",
                 "--max-model-len 32768", "--reasoning-parser qwen3", "--host 0.0.0.0", "--port 8000"):
        assert flag in proc.stdout, flag
    assert "HF_ENDPOINT=https://hf-mirror.com" in proc.stdout


def test_the_mounted_qroute_config_loads_under_the_replicas_environment(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose["services"]
    for name in QROUTE_SERVICES:
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, DUMMY_ENV.get(key, "") if value is None else str(value))
        settings = load_settings(DEPLOY / "compose" / "qroute.yaml")
        assert settings.server.host == "0.0.0.0" and settings.server.port == 4000
        assert settings.server.replica_id == name  # QROUTE_SERVER__REPLICA_ID reached the settings
        assert settings.redis is not None
        redis = urlsplit(settings.redis.url)
        assert redis.hostname in services and redis.port == 6379
        local = urlsplit(str(settings.backends["vllm-local"].api_base))
        assert local.hostname == "vllm" and local.port == container_port(services["vllm"])
        assert settings.backends["dashscope"].api_key is not None
        assert settings.backends["dashscope"].api_key.get_secret_value() == DUMMY_ENV["DASHSCOPE_API_KEY"]
        assert settings.client_keys() == {"sk-dummy-client"}
        assert not settings.metrics.require_key  # Prometheus scrapes without a key


def test_interpolation_helper() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate("${A}-${B:-two}-${E:-three}-${E-four}-$$A-${A:+set}", env) == "1-two-three--$A-set"
    with pytest.raises(ValueError):
        interpolate("${B:?needed}", env)
