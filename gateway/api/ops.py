"""GET /v1/models, /healthz (process alive), /readyz (each upstream's state), /metrics (Prometheus)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from gateway.auth import check_key
from gateway.errors import InvalidRequest
from gateway.protocol import ModelCard, ModelList

router = APIRouter()
_STARTED = int(time.time())


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    check_key(request, request.app.state.client_keys)
    gateway = request.app.state.gateway
    cards = [ModelCard(id=i, created=_STARTED, owned_by="qroute") for i in gateway.resolver.model_ids()]
    return JSONResponse(ModelList(data=cards).model_dump())


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when at least one backend is reachable with its breaker not open."""
    upstreams = await request.app.state.gateway.readiness()
    ready = any(u["reachable"] and u["breaker"] != "open" for u in upstreams.values())
    return JSONResponse({"ready": ready, "upstreams": upstreams}, status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format. Open by default (scrapers rarely hold API keys); with
    `metrics.require_key` a client or admin key is needed, as on /v1."""
    gateway = request.app.state.gateway
    if not gateway.metrics.enabled:
        raise InvalidRequest("Metrics are turned off (metrics.enabled).", code="not_found", status=404)
    if gateway.settings.metrics.require_key:
        check_key(request, request.app.state.client_keys | request.app.state.admin_keys)
    body, content_type = gateway.metrics.render()
    return Response(body, media_type=content_type)
