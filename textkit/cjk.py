"""The CJK character ranges, defined once: unified ideographs, extension A, compatibility ideographs."""

from __future__ import annotations

import re

CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_RUN = re.compile(f"[{CJK_RANGES}]+")
_CJK_CHAR = re.compile(f"[{CJK_RANGES}]")


def cjk_count(text: str) -> int:
    """How many characters of `text` are CJK ideographs."""
    return len(_CJK_CHAR.findall(text))
