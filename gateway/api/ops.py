"""GET /v1/models[/{id}], /healthz (process alive), /readyz (each upstream's state), /metrics (Prometheus)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from gateway.auth import check_key, key_matches, presented_key
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.protocol import ModelCard, ModelList

router = APIRouter()
_STARTED = int(time.time())


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    check_key(request, request.app.state.client_keys)
    return JSONResponse(ModelList(data=_model_cards(request)).model_dump())


def _model_cards(request: Request) -> list[ModelCard]:
    """Chat models (`auto`, the routes, configured model ids), then the embedders (`embeddings.models`),
    all `owned_by: qroute` as one OpenAI-shaped list; `default` is an alias, not listed."""
    ids = [*request.app.state.gateway.resolver.model_ids(), *request.app.state.embeddings.names()]
    return [ModelCard(id=i, created=_STARTED, owned_by="qroute") for i in ids]


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request, model_id: str) -> JSONResponse:
    """One model object, for any id GET /v1/models lists (ids may hold `/`: `Qwen/Qwen3-8B`)."""
    check_key(request, request.app.state.client_keys)
    for card in _model_cards(request):
        if card.id == model_id:
            return JSONResponse(card.model_dump())
    raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when at least one backend is reachable and would take a request now: its breaker lets one
    through (not open, no half-open trial out), no configuration error seen since it last answered, and
    a free connection in its pool. Without the admin key only each backend's state is shown; its model,
    URL, configuration error and replicas need the key (upstream addresses are nobody else's business)."""
    upstreams = await request.app.state.gateway.readiness()
    ready = any(u["reachable"] and u["accepting"] for u in upstreams.values())
    if not key_matches(presented_key(request), request.app.state.admin_keys):
        upstreams = {name: {k: u[k] for k in _PUBLIC_STATE if k in u} for name, u in upstreams.items()}
    return JSONResponse({"ready": ready, "upstreams": upstreams}, status_code=200 if ready else 503)


_PUBLIC_STATE = ("reachable", "breaker", "accepting", "consecutive_failures", "in_flight", "trial_in_flight",
                 "pool_full", "spilling")


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
