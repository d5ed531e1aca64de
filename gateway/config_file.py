"""Edits to the YAML file that people wrote, keeping their comments, order and layout
(ruamel.yaml's round trip). The result is read back and checked before it replaces the file."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from gateway.settings import ConfigError


def _yaml() -> YAML:
    yaml = YAML()  # round-trip mode
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    return yaml


def set_keys(path: Path, section: str, values: dict[str, Any]) -> None:
    """Set `section.key` for each key in `values`, creating the section if it is missing."""
    yaml = _yaml()
    text = path.read_text(encoding="utf-8")
    try:
        doc = yaml.load(text)
    except Exception as exc:  # ruamel raises several unrelated error types
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    block = doc.get(section)
    if block is None:
        block = doc[section] = CommentedMap()
    if not isinstance(block, dict):
        raise ConfigError(f"config file {path}: {section} must be a mapping")
    for key, value in values.items():
        block[key] = value
    out = io.StringIO()
    yaml.dump(doc, out)
    check = _yaml().load(out.getvalue())
    if any(check[section][k] != v for k, v in values.items()):
        raise ConfigError(f"writing {section} to {path} did not round-trip; the file was left as it was")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(out.getvalue())
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
