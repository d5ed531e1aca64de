"""Company, product and domain terms: a jieba user dictionary (one term per line, optionally
followed by a frequency and a part-of-speech tag), shared with the retrieval side."""

from __future__ import annotations

from pathlib import Path


def load_terms(path: str | Path | None) -> frozenset[str]:
    """The terms of a user dictionary; also taught to jieba so they count as one token."""
    if path is None:
        return frozenset()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"domain dictionary not found: {path}")
    terms = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        term = line.strip().split(" ")[0] if line.strip() and not line.startswith("#") else ""
        if term:
            terms.add(term)
    if terms:
        import jieba

        for term in terms:
            jieba.add_word(term)
    return frozenset(terms)
