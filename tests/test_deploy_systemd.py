"""deploy/systemd/: `systemd-analyze verify` accepts both units (it works without a running systemd;
the executables the units name are swapped for ones that exist here, since verify checks them), and
their structure is what docs/deploy.md says: non-root users, keys from an environment file, restart
policies that do not loop on a bad configuration or a full GPU, hardening."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
QROUTE_BIN = "/opt/qroute/venv/bin/qroute"
START_SH = "/opt/qroute/deploy/vllm/start.sh"


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections -> (key, value) in order; systemd allows a key more than once."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            current = m.group(1)
            sections.setdefault(current, [])
            continue
        assert current, f"{path.name}: {line!r} outside a section"
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [v for k, v in unit.get(section, []) if k == key]


def one(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str:
    found = values(unit, section, key)
    assert len(found) == 1, f"[{section}] {key}: {found}"
    return found[0]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    found = shutil.which("systemd-analyze")
    if not found:
        message = "systemd-analyze not found: run `bash tests/tools.sh` (Debian package systemd)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set: a missing tool is a failure)", pytrace=False)
        pytest.skip(message)
    fake_qroute = tmp_path / "qroute"
    fake_qroute.write_text("#!/bin/sh\nexit 0\n")
    fake_qroute.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    for name in ("qroute.service", "vllm.service"):
        text = (UNITS / name).read_text()
        assert QROUTE_BIN in text or START_SH in text
        text = text.replace(QROUTE_BIN, str(fake_qroute)).replace(START_SH, str(ROOT / "deploy/vllm/start.sh"))
        (units / name).write_text(text)
    proc = subprocess.run([found, "verify", "qroute.service", "vllm.service"], cwd=units,
                          capture_output=True, text=True, timeout=60)
    # Unknown keys and misplaced settings are only warnings: any output fails the test.
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), proc.stdout + proc.stderr


def test_qroute_unit() -> None:
    unit = parse_unit(UNITS / "qroute.service")
    exec_start = one(unit, "Service", "ExecStart")
    assert exec_start.startswith(QROUTE_BIN + " serve --config /etc/qroute/qroute.yaml --workers ")
    workers = exec_start.rsplit(" ", 1)[1]
    assert workers == "${QROUTE_WORKERS}" and "QROUTE_WORKERS=4" in values(unit, "Service", "Environment")
    assert one(unit, "Service", "EnvironmentFile") == "/etc/qroute/qroute.env"  # required: the keys
    assert one(unit, "Service", "User") not in ("root", "0", "")
    assert one(unit, "Service", "Restart") == "on-failure"
    assert "2" in one(unit, "Service", "RestartPreventExitStatus").split()  # `qroute serve`'s bad-config exit
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                       ("PrivateTmp", "yes"), ("PrivateDevices", "yes"), ("CapabilityBoundingSet", "")):
        assert one(unit, "Service", key) == value, key
    assert one(unit, "Service", "WorkingDirectory") == "/var/lib/qroute"
    assert one(unit, "Service", "StateDirectory") == "qroute"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # No key, password or token in the unit itself.
    for _, value in unit["Service"]:
        assert not re.search(r"(?i)(sk-|api_key=|password=|token=)", value), value


def test_vllm_unit_runs_start_sh_in_the_foreground() -> None:
    unit = parse_unit(UNITS / "vllm.service")
    assert one(unit, "Service", "ExecStart") == START_SH + " --foreground"
    assert one(unit, "Service", "ExecStartPost").startswith(START_SH + " --wait-healthy")
    assert one(unit, "Service", "User") not in ("root", "0", "")
    assert set(one(unit, "Service", "RestartPreventExitStatus").split()) == {"2", "3", "4"}
    assert "PrivateDevices" not in dict(unit["Service"])  # vLLM needs /dev/nvidia*
    env = dict(v.split("=", 1) for v in values(unit, "Service", "Environment"))
    assert env["VLLM_CMD"].endswith("/bin/vllm") and env["VLLM_PORT"] == "8000"
    assert one(unit, "Service", "EnvironmentFile") == "-/etc/qroute/vllm.env"
    # The timeout of the health wait fits inside TimeoutStartSec.
    post_timeout = int(one(unit, "Service", "ExecStartPost").split("--health-timeout ")[1].split()[0])
    assert post_timeout < int(one(unit, "Service", "TimeoutStartSec"))


def test_environment_examples_hold_placeholders_only() -> None:
    help_text = subprocess.run(["bash", str(ROOT / "deploy/vllm/start.sh"), "--help"], capture_output=True,
                               text=True, check=True).stdout
    for line in (UNITS / "vllm.env.example").read_text().splitlines():
        if m := re.match(r"#? ?([A-Z_]+)=", line):
            assert m.group(1) in help_text, m.group(1)  # every variable is one start.sh documents
    names = set()
    for line in (UNITS / "qroute.env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            names.add(name)
            assert "replace" in value, line
    assert {"DASHSCOPE_API_KEY", "QROUTE_API_KEYS", "QROUTE_ADMIN_KEYS"} <= names
