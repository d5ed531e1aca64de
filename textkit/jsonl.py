"""The JSON-lines reader behind every command and file format that takes one object per line.

Blank lines are skipped. A line that is not a JSON object goes to `on_bad(line_number, reason)`,
which may log and carry on, or raise to stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

BadLine = Callable[[int, str], None]


def read_jsonl(lines: Iterable[str], on_bad: BadLine) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each line that holds a JSON object; numbers start at 1."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            on_bad(number, f"not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            on_bad(number, "not a JSON object")
            continue
        yield number, row
