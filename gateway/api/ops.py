"""GET /v1/models, /healthz (process alive) and /readyz (each upstream's state)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from gateway.auth import check_key
from gateway.protocol import model_list

router = APIRouter()
_STARTED = int(time.time())


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    check_key(request, request.app.state.client_keys)
    gateway = request.app.state.gateway
    ids = [(i, "qroute") for i in gateway.resolver.model_ids()]
    return JSONResponse(model_list(ids, _STARTED))


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when at least one backend is reachable with its breaker not open."""
    upstreams = await request.app.state.gateway.readiness()
    ready = any(u["reachable"] and u["breaker"] != "open" for u in upstreams.values())
    return JSONResponse({"ready": ready, "upstreams": upstreams}, status_code=200 if ready else 503)
