"""Invalid configuration fails at start with a message naming the bad key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from gateway.settings import ConfigError, load_settings
from tests.conftest import config_dict, free_port


def _write(tmp_path, cfg) -> str:
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump(cfg) if not isinstance(cfg, str) else cfg)
    return str(path)


def _base() -> dict:
    return config_dict("http://127.0.0.1:1", "http://127.0.0.1:2")


def test_shipped_configs_load():
    for path in ("deploy/qroute.example.yaml", "deploy/qroute.demo.yaml"):
        settings = load_settings(path)
        assert settings.backends["dashscope"].model == "qwen3-235b-a22b"
        assert settings.server.host == "127.0.0.1"
    assert "sk-qroute-demo" in load_settings("deploy/qroute.demo.yaml").client_keys()


@pytest.mark.parametrize(
    ("mutate", "named"),
    [
        (lambda c: c["backends"]["dashscope"].update(providr="dashscope"), "backends.dashscope.providr"),
        (lambda c: c["backends"]["dashscope"].update(provider="bedrock"), "backends.dashscope.provider"),
        (lambda c: c["routes"]["cloud"].update(backend="nope"), "routes.cloud.backend"),
        (lambda c: c["routes"].pop("local-think"), "local-think"),
        (lambda c: c.update(router={"t1": 0.9, "t2": 0.2}), "router.t1"),
        (lambda c: c.update(serverr={}), "serverr"),
        (lambda c: c.update(server={"port": 70000}), "server.port"),
        (lambda c: c["prices"].update({"x": {"input": -1, "output": 1}}), "prices.x.input"),
        (lambda c: c["backends"]["dashscope"].update(api_key="sk-inline"), "backends.dashscope.api_key"),
        (lambda c: c["backends"]["vllm-local"].update(api_key="sk-inline"), "backends.vllm-local.api_key"),
    ],
)
def test_bad_key_is_named(tmp_path, mutate, named):
    cfg = _base()
    mutate(cfg)
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, cfg))
    assert named in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "backends: [unclosed"))


def test_environment_overrides_and_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_SERVER__PORT", "4555")
    monkeypatch.setenv("MY_KEYS", "sk-a, sk-b")
    monkeypatch.setenv("QROUTE_TEST_DASHSCOPE_KEY", "sk-up")
    cfg = _base()
    cfg["auth"] = {"api_keys": [], "api_keys_env": "MY_KEYS"}
    settings = load_settings(_write(tmp_path, cfg))
    assert settings.server.port == 4555
    assert settings.client_keys() == {"sk-a", "sk-b"}
    assert settings.backends["dashscope"].api_key.get_secret_value() == "sk-up"
    assert "sk-up" not in repr(settings)


def test_cli_serve_reports_bad_config(tmp_path, capsys):
    from gateway.cli import main

    cfg = _base()
    cfg["routes"]["cloud"]["backendd"] = "x"
    assert main(["serve", "--config", _write(tmp_path, cfg)]) == 2
    assert "routes.cloud.backendd" in capsys.readouterr().err


@pytest.mark.parametrize("broken", ["missing", "no-manifest"])
def test_serve_with_a_bad_index_says_so_in_one_line(tmp_path, broken):
    """A real `qroute serve` process: one line on stderr, exit 2, no traceback, no leaked sessions."""
    index = tmp_path / "kb-index"
    if broken == "no-manifest":
        (index / "v-1").mkdir(parents=True)
        (index / "CURRENT").write_text("v-1")
    cfg = _base()
    cfg["retrieval"] = {"index": str(index)}
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", _write(tmp_path, cfg),
                          "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("qroute: retrieval.index: ") and str(index) in lines[0]
    assert "Traceback" not in out.stderr and "Unclosed" not in out.stderr


def test_serve_with_a_missing_router_model_says_so(tmp_path):
    cfg = _base()
    cfg["router"] = {"model_path": str(tmp_path / "none.json.gz")}
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--config", _write(tmp_path, cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "none.json.gz" in out.stderr and "Traceback" not in out.stderr
