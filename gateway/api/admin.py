"""GET/PUT /admin/router: the routing thresholds, changed at run time by ops (admin key)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from gateway.auth import key_matches, presented_key
from gateway.errors import Forbidden, InvalidRequest, Unauthorized
from gateway.limits import key_id
from gateway.pipeline import Gateway
from router.decide import Thresholds

router = APIRouter()


def _admin(request: Request) -> str:
    keys = request.app.state.admin_keys
    if not keys:
        raise Forbidden("No admin key is configured (auth.admin_keys or QROUTE_ADMIN_KEYS).")
    key = presented_key(request)
    if key is None or not key_matches(key, keys):
        raise Unauthorized("An admin key is required.")
    return key_id(key)  # how the change is logged and audited: never the key itself


async def _body(gateway: Gateway) -> dict[str, Any]:
    t = gateway.resolver.thresholds.current
    return {"t1": t.t1, "t2": t.t2, "scorer": gateway.resolver.scorer.name,
            "shared": "redis" if gateway.redis.configured else "state file",
            "audit": await gateway.router_sync.audit()}


@router.get("/admin/router")
async def get_router(request: Request) -> JSONResponse:
    _admin(request)
    return JSONResponse(await _body(request.app.state.gateway))


@router.put("/admin/router")
async def put_router(request: Request) -> JSONResponse:
    who = _admin(request)
    gateway: Gateway = request.app.state.gateway
    resolver = gateway.resolver
    try:
        patch = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body must be JSON: {\"t1\": 0.6, \"t2\": 0.8}.", code="invalid_json") from None
    if not isinstance(patch, dict) or not patch or set(patch) - {"t1", "t2"}:
        raise InvalidRequest("Send t1 and/or t2, nothing else.", param="body")
    current = resolver.thresholds.current
    values = {"t1": current.t1, "t2": current.t2}
    for key, value in patch.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"{key} must be a number between 0 and 1.", param=key)
        values[key] = float(value)
    try:
        new = Thresholds(values["t1"], values["t2"])
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="t1" if "t1" in patch else "t2") from None
    await gateway.set_thresholds(new, who)
    return JSONResponse(await _body(gateway))
