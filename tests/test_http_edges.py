"""Issue 12 item 11 and the keep-alive half of item 3: the HTTP layer under `qroute serve`'s own
protocol (gateway/http_protocol.py) answers in OpenAI's shape, bounds header time, size and count,
and never lets an error close a kept-alive connection without notice."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from gateway.app import create_app
from gateway.cli import server_options
from simulator.harness import ServerThread
from tests.conftest import CLIENT_KEY, config_dict, settings_from

LIMITS = {"header_timeout_s": 0.5, "max_header_bytes": 4096, "max_headers": 20, "keep_alive_s": 5}


@pytest.fixture(scope="module")
def served(local_sim, cloud_sim, tmp_path_factory) -> Iterator[tuple[str, int, object]]:
    """The gateway under the same uvicorn options `qroute serve` uses."""
    cfg = config_dict(local_sim[1].base, cloud_sim[1].base, server=LIMITS, spill={"enabled": False})
    settings = settings_from(tmp_path_factory.mktemp("http"), cfg)
    app = create_app(settings)
    with ServerThread(app, **server_options(settings)) as server:
        yield "127.0.0.1", server.port, app


def _connect(served: tuple[str, int, object]) -> socket.socket:
    return socket.create_connection(served[:2], timeout=5)  # type: ignore[arg-type]


def _read_response(reader) -> tuple[int, dict[str, str], bytes]:
    status = reader.readline()
    assert status, "connection closed without an answer"
    headers: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers.get("content-length", 0)))
    return int(status.split()[1]), headers, body


def _exchange(served, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    with _connect(served) as sock:
        sock.sendall(raw)
        return _read_response(sock.makefile("rb"))


def _openai_error(body: bytes) -> dict:
    err = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def _closed(sock: socket.socket, within: float) -> bool:
    """True when the server closes the socket within `within` seconds (reading what it sends)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False


def test_malformed_request_is_an_openai_400(served):
    status, headers, body = _exchange(served, b"NOT-HTTP \x00\x01\r\n\r\n")
    assert status == 400 and headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert _openai_error(body)["code"] == "invalid_http_request"


def test_headers_must_arrive_in_time(served):
    started = time.monotonic()
    with _connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # never finishes its headers
        status, _, body = _read_response(sock.makefile("rb"))
    assert status == 408 and _openai_error(body)["code"] == "header_timeout"
    assert time.monotonic() - started < 3


def test_a_silent_connection_is_closed(served):
    with _connect(served) as sock:
        assert _closed(sock, 3)


def test_slow_drip_headers_are_cut_off(served):
    started = time.monotonic()
    with _connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        try:
            for i in range(40):  # a header line every 0.1 s keeps the connection busy, not the deadline
                sock.sendall(f"x-drip-{i}: 1\r\n".encode())
                time.sleep(0.1)
        except OSError:
            pass
        assert _closed(sock, 3)
    assert time.monotonic() - started < 3


def test_too_many_headers_is_431(served):
    lines = "".join(f"x-h{i}: v\r\n" for i in range(30))
    status, _, body = _exchange(served, f"GET /healthz HTTP/1.1\r\nhost: x\r\n{lines}\r\n".encode())
    assert status == 431 and _openai_error(body)["code"] == "request_header_fields_too_large"


def test_too_large_headers_is_431(served):
    status, _, body = _exchange(served, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n")
    assert status == 431 and _openai_error(body)["code"] == "request_header_fields_too_large"


def test_an_endless_header_line_is_431(served):
    with _connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nx-endless: ")
        try:
            for _ in range(40):  # small pieces, each its own read: the parser calls nothing back meanwhile
                sock.sendall(b"a" * 250)
                time.sleep(0.005)
        except OSError:
            pass
        status, _, _ = _read_response(sock.makefile("rb"))
    assert status == 431


def test_keep_alive_outlives_the_header_deadline(served):
    """The deadline runs from a request's first byte: an idle kept-alive connection is not cut at it."""
    with _connect(served) as sock:
        reader = sock.makefile("rb")
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            assert _read_response(reader)[0] == 200
            time.sleep(0.8)  # longer than header_timeout_s, shorter than keep_alive_s


@pytest.mark.parametrize("text", ["hi", "x" * 50_000])  # a body bigger than the header limit, in one write
def test_normal_requests_still_work(served, text):
    body = b'{"model":"local","messages":[{"role":"user","content":"%s"}]}' % text.encode()
    raw = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
           f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    assert _exchange(served, raw)[0] == 200


def test_trailing_slash_is_a_404_not_a_redirect(served):
    raw = b"POST /v1/chat/completions/ HTTP/1.1\r\nhost: evil.example\r\ncontent-length: 2\r\n\r\n{}"
    status, headers, body = _exchange(served, raw)
    assert status == 404 and "location" not in headers
    assert _openai_error(body)["code"] == "not_found"


def test_405_names_the_allowed_methods(served):
    status, headers, body = _exchange(served, b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n")
    assert status == 405 and headers["allow"] == "POST"
    assert _openai_error(body)["type"] == "invalid_request_error"


def test_an_unexpected_error_is_a_500_that_keeps_the_connection(served, monkeypatch):
    async def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(served[2].state.gateway, "handle_chat", boom)
    body = b'{"model":"local","messages":[{"role":"user","content":"hi"}]}'
    post = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {CLIENT_KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    with _connect(served) as sock:
        reader = sock.makefile("rb")
        sock.sendall(post)
        status, _, answer = _read_response(reader)
        assert status == 500 and _openai_error(answer)["code"] == "internal_error"
        assert b"a bug" not in answer and b"Traceback" not in answer
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert _read_response(reader)[0] == 200
