"""create_app(): the FastAPI application, its lifespan and its error handlers."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from gateway.api import admin, chat, completions, embeddings, openapi, ops
from gateway.api import responses as responses_api
from gateway.api.input_limits import InputLimits
from gateway.api.keep_connection import KeepConnection
from gateway.context import headers_for, request_state
from gateway.embeddings import EmbeddingsService
from gateway.errors import GatewayError, InvalidRequest
from gateway.pipeline import Gateway
from gateway.settings import (
    LOG_FORMAT,
    WORKERS_ENV,
    Settings,
    config_path_from_environment,
    load_settings,
    split_admission,
)

log = logging.getLogger("qroute")


def error_response(request: Request, err: GatewayError) -> Response:
    """The error in OpenAI's shape; a chat request is also finished (counted) with it here."""
    state = request_state(request)
    request.app.state.gateway.finish_with_error(state, err)
    headers = {**headers_for(state), **err.headers()}
    return Response(err.json(), status_code=err.status, media_type="application/json", headers=headers)


def create_app(settings: Settings, gateway: Gateway | None = None) -> FastAPI:
    gw = gateway or Gateway(settings)
    embedders = EmbeddingsService(settings.embeddings, gw.metrics, reserved=gw.resolver.model_ids())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await embedders.start()
        await gw.start()
        try:
            yield
        finally:
            await gw.close()
            embedders.close()
            gw.metrics.process_exiting()

    # No trailing-slash redirects: their Location was built from the client's Host header; a path
    # that is not served is a 404 in OpenAI's shape instead.
    app = FastAPI(title="qroute", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    app.state.gateway = gw
    app.state.input_limits = InputLimits.of(settings)
    app.state.embeddings = embedders
    app.state.client_keys = settings.client_keys()
    app.state.admin_keys = settings.admin_keys()
    if not app.state.client_keys:
        log.warning("no client API keys configured: /v1 is open to anyone who can reach %s:%d",
                    settings.server.host, settings.server.port)
    app.include_router(chat.router)
    app.include_router(completions.router)
    app.include_router(ops.router)
    app.include_router(embeddings.router)
    app.include_router(admin.router)
    app.include_router(responses_api.router)
    app.include_router(openapi.router)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> Response:
        if exc.status >= 500:
            log.warning("request %s failed: %s", request_state(request).request_id, exc.message)
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        err = InvalidRequest(str(exc.detail), code="not_found" if exc.status_code == 404 else "http_error",
                             status=exc.status_code)
        response = error_response(request, err)
        if exc.headers:  # 405's Allow, above all
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error in request %s", request_state(request).request_id)
        err = GatewayError("The server had an error while processing your request.")
        return error_response(request, err)

    app.add_middleware(KeepConnection)
    return app


def app_from_environment() -> FastAPI:
    """The app factory each `qroute serve --workers N` worker process calls."""
    settings = split_admission(load_settings(config_path_from_environment()), int(os.environ.get(WORKERS_ENV, "1")))
    logging.basicConfig(level=settings.server.log_level.upper(), format=LOG_FORMAT)
    return create_app(settings)
