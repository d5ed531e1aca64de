"""Whose fault an upstream's error answer is. One rule, used by both transports, decides whether the
request falls back to another route and whether the backend's breaker is charged:

- request: a 4xx other than 401/403/404/408/409/429, or a 5xx whose error body says the request was
  invalid (its `type` or `code` is a request-validation one: BadRequestError, invalid_request_error,
  400, 422, ...). The client gets it as a request error (a 5xx becomes 400); no other route is tried
  and no breaker is charged: another upstream would refuse the same request.
- config: 401, 403, 404. The gateway sends its own key and its own served model name, so these say the
  gateway's configuration is wrong (key, model, api_base): 502 `upstream_misconfigured`, counted, the
  backend reported unready, the next route tried, the breaker charged.
- upstream: 408, 409, 429, 502, 503, 504 (and connect errors, timeouts, broken or unreadable answers,
  raised elsewhere): fall back and charge the breaker.
- unsure: any other 5xx (a plain 500): the upstream may be broken, or the request may be poison. The
  request falls back; the breaker is charged only once another route has answered the same request
  (it was servable), never when another route failed it with a 5xx too (the request is the common
  factor). With no other route to ask, it is charged.

Only structured fields are read, never free text, so a message that happens to say "invalid" does not
turn an outage into a client error.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import Blame

CONFIG_STATUSES = frozenset({401, 403, 404})
UPSTREAM_STATUSES = frozenset({408, 409, 429, 502, 503, 504})
_INVALID_TYPES = frozenset({
    "badrequesterror", "invalid_request_error", "invalidrequesterror", "validationerror",
    "requestvalidationerror", "unprocessableentityerror", "invalid_parameter_error", "invalidparameter",
})
_INVALID_CODES = frozenset({"400", "413", "422", "invalid_request_error", "invalid_parameter_error",
                            "invalidparameter", "invalid_value", "context_length_exceeded"})


def says_invalid_request(error: dict[str, Any] | None) -> bool:
    """Does an upstream's error object name the request as invalid (vLLM, DashScope, OpenAI shapes)?"""
    if not error:
        return False
    kind = str(error.get("type") or "").lower()
    code = str(error.get("code") or "").lower()
    return kind in _INVALID_TYPES or code in _INVALID_CODES


def blame_for(status: int, error: dict[str, Any] | None = None) -> Blame:
    """The blame for an upstream answer with this status and error object."""
    if status in CONFIG_STATUSES:
        return Blame.CONFIG
    if status in UPSTREAM_STATUSES:
        return Blame.UPSTREAM
    if status < 500 or says_invalid_request(error):
        return Blame.REQUEST
    return Blame.UNSURE
