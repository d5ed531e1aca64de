"""Company, product and domain terms for the router: its own dictionary file, parsed without side
effects. They are counted by the `domain_terms` feature and kept whole by the router's segmenter."""

from __future__ import annotations

from pathlib import Path

from textkit.dictionary import read_dictionary


def load_terms(path: str | Path | None) -> frozenset[str]:
    return frozenset(read_dictionary(path)) if path is not None else frozenset()
