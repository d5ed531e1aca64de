"""GET /openapi.json: the public API's schema, with request bodies as the gateway validates them.

The handlers read their bodies themselves (size limit, depth, off-loop parsing), so FastAPI sees no
body parameters; the schema is completed here from the same pydantic models the handlers use.
It is served without a key (it holds nothing secret) so that fuzzers and client generators can
read it; /admin is left out. Built once per app.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.responses import JSONResponse

from gateway.embeddings import EmbeddingsRequest
from gateway.protocol import ChatCompletionRequest, CompletionRequest, ErrorResponse
from gateway.responses.protocol import ResponsesRequest

router = APIRouter()
_REF = "#/components/schemas/{model}"
BODIES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingsRequest,
    "/v1/responses": ResponsesRequest,
}
_HI = [{"role": "user", "content": "hello"}]
EXAMPLES: dict[str, dict[str, Any]] = {  # one valid body per operation: what a fuzzer starts from
    "/v1/chat/completions": {"model": "auto", "messages": _HI, "max_tokens": 16},
    "/v1/completions": {"model": "local", "prompt": "hello", "max_tokens": 16},
    "/v1/embeddings": {"model": "default", "input": ["hello"]},
    "/v1/responses": {"model": "auto", "input": "hello", "max_output_tokens": 16},
}
OPEN = {"/healthz", "/readyz", "/metrics", "/openapi.json"}  # no key needed


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title="qroute", version="1", routes=app.routes,
                      description="OpenAI-compatible gateway; errors are {\"error\": {message, type, param, code}}.")
    components: dict[str, Any] = doc.setdefault("components", {}).setdefault("schemas", {})
    error = _schema(ErrorResponse, components)
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    paths: dict[str, Any] = {}
    for path, item in doc.get("paths", {}).items():
        if path.startswith("/admin"):
            continue
        path = path.replace("{model_id:path}", "{model_id}")
        for method, op in item.items():
            model = BODIES.get(path) if method == "post" else None
            if model is not None:
                op["requestBody"] = {"required": True, "content": {"application/json": {
                    "schema": _schema(model, components), "example": EXAMPLES[path]}}}
            op.setdefault("responses", {})["default"] = {
                "description": "An error in OpenAI's shape", "content": {"application/json": {"schema": error}}}
            op["responses"].pop("422", None)  # FastAPI's validation answer: never sent, errors are 400s
            if path not in OPEN:
                op["security"] = [{"bearer": []}]
        paths[path] = item
    doc["paths"] = paths
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return doc


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    doc = getattr(request.app.state, "openapi", None)
    if doc is None:
        doc = request.app.state.openapi = build_openapi(request.app)
    return JSONResponse(doc)
