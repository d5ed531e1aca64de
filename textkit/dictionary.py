"""User dictionaries of company, product and domain terms (jieba's format: `term [freq [tag]]`
per line, `#` comments). Parsing only: whoever reads a dictionary decides which segmenter learns it."""

from __future__ import annotations

from pathlib import Path


def parse_dictionary_text(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def read_dictionary(path: str | Path) -> list[str]:
    """The terms of a dictionary file, in file order; FileNotFoundError names the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"user dictionary not found: {path}")
    return parse_dictionary_text(path.read_text(encoding="utf-8"))
