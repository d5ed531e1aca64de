"""uvicorn's httptools protocol with the bounds it lacks, and its own errors in OpenAI's shape.

uvicorn answers a malformed request with a plain-text "Invalid HTTP request received.", sets no
deadline for a request's headers (1,500 half-open connections stayed open for 70 s), and takes
headers of any size and number. Here: a request must finish its headers within
`server.header_timeout_s` of its first byte (else 408), in at most `server.max_header_bytes`
and `server.max_headers` lines (else 431), and every such answer is an OpenAI error body with
`connection: close`. Everything else is uvicorn's own code.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from gateway.settings import ServerConfig, config_path_from_environment, load_settings


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100

    @classmethod
    def of(cls, server: ServerConfig) -> HttpLimits:
        return cls(server.header_timeout_s, server.max_header_bytes, server.max_headers)


def error_bytes(status: int, message: str, code: str, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 error response that closes the connection."""
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": code}})
    head = [STATUS_LINE[status]]
    for name, value in default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.extend([b"content-type: application/json\r\n", b"content-length: ", str(len(body)).encode(), b"\r\n",
                 b"connection: close\r\n\r\n", body])
    return b"".join(head)


class _Rejected(Exception):
    """Raised from a parser callback to stop parsing; data_received then answers."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """Use a subclass from `protocol_class(limits)`; this one carries the defaults."""

    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._header_bytes = 0
        self._raw_header_bytes = 0
        self._header_count = 0
        self._rejection: tuple[int, str, str] | None = None

    # --- the header deadline ---------------------------------------------------------------------
    def _headers_begin(self) -> None:
        self._in_headers = True
        self._header_bytes = self._header_count = self._raw_header_bytes = 0
        self._cancel_timer()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_timed_out)

    def _cancel_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            self._reply(408, f"The request headers did not arrive within {self.limits.header_timeout_s:g} s "
                             "(server.header_timeout_s).", "header_timeout")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._headers_begin()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # the next request on a kept-alive connection
            self._headers_begin()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_timer()
        super().on_headers_complete()

    # --- header size and count -------------------------------------------------------------------
    def _too_large(self, what: str) -> _Rejected:
        self._rejection = (431, f"Request {what} over the limit (server.max_header_bytes "
                                f"{self.limits.max_header_bytes}, server.max_headers {self.limits.max_headers}).",
                           "request_header_fields_too_large")
        return _Rejected()

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.limits.max_header_bytes:
            raise self._too_large("line and headers are")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers:
            raise self._too_large("has more header lines than allowed:")
        if self._header_bytes > self.limits.max_header_bytes:
            raise self._too_large("headers are")
        super().on_header(name, value)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_headers:
            return
        # Headers still incomplete after all of this chunk: count it whole, so that one endless line
        # (which the parser buffers without calling back) is caught too.
        self._raw_header_bytes += len(data)
        if self._raw_header_bytes > self.limits.max_header_bytes:
            self._too_large("headers are")
            assert self._rejection is not None
            self._reply(*self._rejection)

    # --- answers ---------------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to anything the parser refused: ours when a limit was hit, else a 400."""
        status, message, code = self._rejection or (400, msg, "invalid_http_request")
        self._reply(status, message, code)

    def _reply(self, status: int, message: str, code: str) -> None:
        self._in_headers = False
        self._cancel_timer()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, message, code, self.server_state.default_headers))
            self.transport.close()


def protocol_class(limits: HttpLimits) -> type[BoundedHttpProtocol]:
    """A protocol class bound to these limits (uvicorn instantiates it once per connection)."""
    return type("QrouteHttpProtocol", (BoundedHttpProtocol,), {"limits": limits})


@functools.cache
def _environment_limits() -> HttpLimits:
    return HttpLimits.of(load_settings(config_path_from_environment()).server)


class WorkerHttpProtocol(BoundedHttpProtocol):
    """For `qroute serve --workers N`: uvicorn imports the protocol by name in each worker, so the
    limits come from the worker's config file (QROUTE_CONFIG), read once per process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.limits = _environment_limits()
        super().__init__(*args, **kwargs)
