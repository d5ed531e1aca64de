"""Gateway errors. Each knows its HTTP status and renders OpenAI's error shape.

    GatewayError
    ├── InvalidRequest        400 invalid_request_error (param names the field)
    ├── Unauthorized          401 invalid_api_key
    ├── ModelNotFound         404 model_not_found
    ├── PayloadTooLarge       413 request_too_large
    ├── RateLimited           429 rate_limit_exceeded (a key over its limits; Retry-After)
    ├── RetrievalFailed       500 retrieval_error (the search itself failed)
    │   └── RetrievalUnavailable 503 retrieval_unavailable (embedding or rerank endpoint down)
    ├── ClientGone            499 client_closed_request (the client left before its answer; never sent)
    └── UpstreamError         upstream's status for client errors, else 502/503/504
        ├── UpstreamTimeout   504 (connect, first token, idle or total timeout)
        └── UpstreamUnavailable 503 (connection refused, breaker open)

Every UpstreamError carries its `blame` (gateway/upstreams/blame.py), which decides fallback and
whether the backend's breaker is charged.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

import orjson

from gateway.protocol import ErrorDetail, ErrorResponse


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"
    outcome = "internal_error"  # the `outcome` label of qroute_requests_total (gateway/metrics.py)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    retry_after: float | None = None  # seconds; sent as Retry-After with 429 and 503 answers

    def headers(self) -> dict[str, str]:
        if self.retry_after is None or self.status not in (429, 503):
            return {}
        return {"retry-after": str(max(1, math.ceil(self.retry_after)))}

    def body(self) -> dict[str, Any]:
        detail = ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code)
        return ErrorResponse(error=detail).model_dump()

    def json(self) -> bytes:
        return orjson.dumps(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"
    outcome = "client_error"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    outcome = "unauthorized"


class Forbidden(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "forbidden"
    outcome = "unauthorized"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    outcome = "client_error"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    outcome = "client_error"


class RateLimited(GatewayError):
    """A client key over one of its limits (limits:): 429 with Retry-After."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    outcome = "rate_limited"

    def __init__(self, message: str, *, limit: str, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit  # rpm, tpm, concurrent or budget
        self.retry_after = retry_after


class RetrievalFailed(GatewayError):
    """Grounding was asked for and the search failed: the answer is not sent ungrounded."""

    status = 500
    type = "server_error"
    code = "retrieval_error"
    outcome = "retrieval_error"


class RetrievalUnavailable(RetrievalFailed):
    status = 503
    code = "retrieval_unavailable"


class ClientGone(GatewayError):
    """The client disconnected while its answer was being made: the upstream request was cancelled."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"
    outcome = "cancelled"


class Blame(StrEnum):
    """Whose fault an upstream failure is (the rule: gateway/upstreams/blame.py)."""

    REQUEST = "request"  # the request itself: returned to the client, not retried, breaker not charged
    CONFIG = "config"  # the gateway's own configuration (upstream key, model name): 502, fall back, charged
    UPSTREAM = "upstream"  # the upstream's health: fall back, charged
    UNSURE = "unsure"  # a 5xx from a live upstream: fall back, charged only if another route answers


class UpstreamError(GatewayError):
    """A backend failed. `retryable` says whether another route may succeed; `blame` whose fault it was."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    outcome = "upstream_error"

    def __init__(self, message: str, *, backend: str, status: int | None = None, retryable: bool = True,
                 param: str | None = None, code: str | None = None, upstream_status: int | None = None,
                 retry_after: float | None = None, blame: Blame = Blame.UPSTREAM) -> None:
        super().__init__(message, param=param, code=code, status=status)
        self.backend = backend
        self.retryable = retryable
        self.blame = blame
        self.upstream_status = upstream_status  # what the upstream itself answered, when it answered
        self.retry_after = retry_after
        if self.status == 429:
            self.type, self.outcome = "rate_limit_error", "rate_limited"
            self.code = code or "rate_limit_exceeded"
        elif self.status < 500:
            # The upstream rejected the request itself: tell the client as a request error.
            self.type = "invalid_request_error"
            self.outcome = "upstream_rejected"

    @property
    def attempt_result(self) -> str:
        """How this attempt reads in x-qroute-attempts: the upstream's own status, else ours."""
        return str(self.upstream_status or self.status)


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    outcome = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status = 503
    code = "upstream_unavailable"
    outcome = "upstream_unavailable"


def sse_error(err: GatewayError) -> bytes:
    """The error event a broken stream ends with, before `data: [DONE]`."""
    return b"data: " + err.json() + b"\n\ndata: [DONE]\n\n"
