"""A short schemathesis run in the normal suite (benchmarks/fuzz.py is the long one): requests
generated from the gateway's own /openapi.json, valid and invalid, against the app on the
simulator. No 5xx, and every error in OpenAI's shape."""

from __future__ import annotations

import httpx

from benchmarks.fuzz import fuzz
from tests.conftest import CLIENT_KEY


def test_openapi_is_served_without_a_key_and_lists_the_public_api(gateway):
    r = httpx.get(f"{gateway.base}/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/models"} <= set(doc["paths"])
    assert not any(p.startswith("/admin") for p in doc["paths"])
    chat = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert chat["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    request = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(request["required"])


def test_fuzzing_finds_no_5xx_and_only_openai_shaped_errors(gateway):
    report = fuzz(gateway.base, examples=10, key=CLIENT_KEY)
    assert report.requests > 100
    assert not report.server_errors, report.server_errors[:3]
    assert not report.shape_errors, report.shape_errors[:3]
