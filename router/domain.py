"""Company, product and domain terms for the `domain_terms` feature: the same jieba user
dictionary that retrieval uses, read by retrieval's loader (which also teaches jieba the terms)."""

from __future__ import annotations

from pathlib import Path


def load_terms(path: str | Path | None) -> frozenset[str]:
    if path is None:
        return frozenset()
    from retrieval.segment import load_user_dictionary

    return frozenset(load_user_dictionary(path))
