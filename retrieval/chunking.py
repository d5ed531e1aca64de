"""Split text into chunks of about 150-300 characters on Chinese and English sentence
boundaries, with one sentence of overlap between neighbours."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[。！？；!?;])|(?<=[.])\s+|\n+")

MIN_CHARS = 150
MAX_CHARS = 300
OVERLAP_SENTENCES = 1


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offset in the source text


def sentences(text: str) -> list[tuple[str, int]]:
    """(sentence, offset) pairs; overlong sentences are cut at MAX_CHARS."""
    out, pos = [], 0
    for piece in _SENTENCE_END.split(text):
        if piece is None:
            continue
        start = text.find(piece, pos) if piece else pos
        pos = start + len(piece)
        stripped = piece.strip()
        if not stripped:
            continue
        offset = start + piece.index(stripped[0])
        for i in range(0, len(stripped), MAX_CHARS):
            out.append((stripped[i:i + MAX_CHARS], offset + i))
    return out


def chunk_text(text: str, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS,
               overlap: int = OVERLAP_SENTENCES) -> list[Chunk]:
    sents = sentences(text)
    chunks: list[Chunk] = []
    i = 0
    while i < len(sents):
        j, size = i, 0
        while j < len(sents) and (size < min_chars or size + len(sents[j][0]) <= max_chars):
            if size and size + len(sents[j][0]) > max_chars:
                break
            size += len(sents[j][0])
            j += 1
        chunks.append(Chunk(_join([s for s, _ in sents[i:j]]), sents[i][1]))
        if j >= len(sents):
            break
        i = max(j - overlap, i + 1)
    return chunks


def _join(parts: list[str]) -> str:
    """Chinese sentences join directly, Latin ones with a space, unpunctuated lines with a newline."""
    out = parts[0]
    for part in parts[1:]:
        if out[-1] not in "。！？；!?;.:：":  # a heading or list item: keep its line break
            out += "\n" + part
        else:
            out += (" " if out[-1].isascii() or part[0].isascii() else "") + part
    return out
