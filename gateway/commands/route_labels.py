"""`qroute route labels --config CFG --out FILE`: the judged shadow rows kept in Redis
(`router.shadow.out: redis`) written as the JSON-lines file `qroute route train --data` reads."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from gateway.redis_link import RedisLink
from gateway.settings import load_settings

_BATCH = 1000


async def export(config: str, out: str) -> int:
    """Rows written; a stream that does not exist yet is zero rows."""
    settings = load_settings(config)
    if settings.redis is None:
        raise ValueError("the config has no redis.url: shadow rows are in router.shadow.out, a file already")
    link = RedisLink(settings.redis)
    client: Any = link.client()
    key, start, written = link.key("shadow"), "-", 0
    fh = await asyncio.to_thread(Path(out).open, "wb")
    try:
        while True:
            entries = await client.xrange(key, min=start, max="+", count=_BATCH)
            lines = [fields["row"].encode() + b"\n" for _, fields in entries if fields.get("row")]
            await asyncio.to_thread(fh.writelines, lines)
            written += len(lines)
            if len(entries) < _BATCH:
                return written
            start = "(" + entries[-1][0]  # exclusive: the next batch starts after the last id
    finally:
        fh.close()
        await link.close()


def cmd_labels(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    try:
        written = asyncio.run(export(args.config, args.out))
    except RedisError as exc:
        print(f"qroute route labels: redis: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {written} judged rows to {args.out}", file=sys.stderr)
    return 0


def add_labels_parser(rsub: argparse._SubParsersAction, guarded: Any) -> None:
    p = rsub.add_parser("labels", help="write the judged shadow rows kept in Redis to a JSON-lines file")
    p.add_argument("--config", required=True, help="gateway YAML config (redis, router.shadow)")
    p.add_argument("--out", required=True, help="JSON-lines file for `qroute route train --data`")
    p.set_defaults(func=guarded(cmd_labels))
