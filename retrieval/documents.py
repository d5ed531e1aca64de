"""Read input documents: .md and .txt files (title from the first heading or the file name) and
.jsonl lines {"id", "text", ...metadata}. Empty, binary or non-UTF-8 files are skipped with a
warning that names them; nothing else is read."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textkit.jsonl import read_jsonl

log = logging.getLogger("qroute.retrieval")
SUFFIXES = (".md", ".txt", ".jsonl")


@dataclass
class Document:
    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"input not found: {path}")


def _read_text(path: Path) -> str | None:
    raw = path.read_bytes()
    if not raw.strip():
        log.warning("skipping %s: empty", path)
        return None
    if b"\x00" in raw[:4096]:
        log.warning("skipping %s: binary content", path)
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("skipping %s: not UTF-8 (%s)", path, exc.reason)
        return None


def _title(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return fallback


def read_documents(inputs: list[str | Path], root: Path | None = None) -> Iterator[Document]:
    for given in inputs:
        base = Path(given)
        for path in _files(base):
            if path.suffix.lower() not in SUFFIXES:
                log.warning("skipping %s: not .md, .txt or .jsonl", path)
                continue
            text = _read_text(path)
            if text is None:
                continue
            rel = str(path.relative_to(base)) if base.is_dir() else path.name
            if path.suffix.lower() == ".jsonl":
                yield from _jsonl_documents(path, text)
            else:
                yield Document(id=rel, text=text, title=_title(text, path.stem), metadata={"source": rel})


def _jsonl_documents(path: Path, text: str) -> Iterator[Document]:
    def bad(number: int, reason: str) -> None:
        log.warning("skipping %s line %d: need {\"id\", \"text\"} (%s)", path, number, reason)

    # split("\n"), not splitlines(): U+2028 and friends are legal inside JSON strings.
    for n, row in read_jsonl(text.split("\n"), bad):
        body = row.get("text")
        if "id" not in row or not isinstance(body, str):
            bad(n, "no id" if "id" not in row else "text is not a string")
            continue
        doc_id = str(row["id"])
        if not body.strip():
            log.warning("skipping %s line %d (id %s): empty text", path, n, doc_id)
            continue
        meta = {k: v for k, v in row.items() if k not in ("id", "text")}
        yield Document(id=doc_id, text=body, title=str(row.get("title", "")), metadata=meta)
