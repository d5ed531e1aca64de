"""/admin/router: the routing thresholds and the router model, changed at run time by ops (admin key)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from gateway.auth import key_matches, presented_key
from gateway.errors import Forbidden, InvalidRequest, Unauthorized
from gateway.limits import key_id
from gateway.pipeline import Gateway
from gateway.router_models import ModelRefused
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


async def _body(gateway: Gateway, shared: str | None = None) -> dict[str, Any]:
    """The current settings; `shared` says where the change just made went ("here only": Redis did not
    take it, so the other replicas keep theirs)."""
    t = gateway.resolver.thresholds.current
    where = shared or ("redis" if gateway.redis.configured else "state file")
    return {"t1": t.t1, "t2": t.t2, "scorer": gateway.resolver.scorer.name, "model": gateway.model.path,
            "shared": where,
            "audit": await gateway.router_sync.audit()}


@router.get("/admin/router")
async def get_router(request: Request) -> JSONResponse:
    _admin(request)
    return JSONResponse(await _body(request.app.state.gateway))


def _thresholds(patch: dict[str, Any], current: Thresholds) -> Thresholds:
    """t1/t2 from a request body, each a number in [0, 1], t1 <= t2; a missing one stays as it is."""
    values = {"t1": current.t1, "t2": current.t2}
    for key in ("t1", "t2"):
        if key not in patch:
            continue
        value = patch[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"{key} must be a number between 0 and 1.", param=key)
        values[key] = float(value)
    try:
        return Thresholds(values["t1"], values["t2"])
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="t1" if "t1" in patch else "t2") from None


@router.put("/admin/router")
async def put_router(request: Request) -> JSONResponse:
    who = _admin(request)
    gateway: Gateway = request.app.state.gateway
    try:
        patch = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body must be JSON: {\"t1\": 0.6, \"t2\": 0.8}.", code="invalid_json") from None
    if not isinstance(patch, dict) or not patch or set(patch) - {"t1", "t2"}:
        raise InvalidRequest("Send t1 and/or t2, nothing else.", param="body")
    shared = await gateway.set_thresholds(_thresholds(patch, gateway.resolver.thresholds.current), who)
    return JSONResponse(await _body(gateway, shared))


@router.put("/admin/router/model")
async def put_model(request: Request) -> JSONResponse:
    """Switch the router to another model file ({"path": FILE}, optionally with the thresholds for its
    scale: "t1", "t2"): checked first, shared with every replica through Redis (the file must be
    readable there too), the current model and thresholds kept for rollback."""
    who = _admin(request)
    gateway: Gateway = request.app.state.gateway
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body must be JSON: {\"path\": FILE}.", code="invalid_json") from None
    if not isinstance(body, dict) or set(body) - {"path", "t1", "t2"} or not isinstance(body.get("path"), str) \
            or not body["path"]:
        raise InvalidRequest("Send {\"path\": FILE} and optionally t1 and t2, nothing else.", param="path")
    thresholds = _thresholds(body, gateway.resolver.thresholds.current) if {"t1", "t2"} & set(body) else None
    try:
        previous, shared = await gateway.model.swap(body["path"], who, thresholds)
    except ModelRefused as exc:
        raise InvalidRequest(str(exc), param="path", code="model_refused") from None
    return JSONResponse({**await _body(gateway, shared), "previous": previous})


@router.post("/admin/router/rollback")
async def rollback_model(request: Request) -> JSONResponse:
    who = _admin(request)
    gateway: Gateway = request.app.state.gateway
    _, shared = await gateway.model.rollback(who)
    return JSONResponse(await _body(gateway, shared))
