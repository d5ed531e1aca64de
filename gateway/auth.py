"""Client authentication: `Authorization: Bearer <key>` (or `api-key`), compared in constant time."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from gateway.errors import Unauthorized


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("api-key") or request.headers.get("x-api-key")


def key_matches(key: str | None, keys: frozenset[str]) -> bool:
    """Constant-time comparison against every configured key."""
    return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


def check_key(request: Request, keys: frozenset[str]) -> None:
    """No keys configured means auth is off (the server warns at start)."""
    if not keys:
        return
    key = presented_key(request)
    if key is None:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    if not key_matches(key, keys):
        raise Unauthorized("Incorrect API key provided.")
