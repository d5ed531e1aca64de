"""Small scripted upstreams on loopback for the fault tests: an aiohttp server on its own loop in a
thread, whose chat answer a test writes as a handler (gzip, a malformed chunk, a hang mid-body, an echoed
key, ...), plus a listener that never accepts. The simulator covers the well-behaved servers; these cover
the wire faults it cannot make."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from simulator.harness import free_port

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse]]
MODEL = "Qwen/Qwen3-8B"


def chunk(content: str | None = None, finish: str | None = None, role: bool = False) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return orjson.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def completion(text: str = "fake answer") -> dict[str, Any]:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def answer_frames(words: tuple[str, ...] = ("fake", " answer")) -> list[bytes]:
    """A whole streamed answer as SSE frames: role, words, finish, usage, [DONE]."""
    usage = orjson.dumps({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                          "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(words),
                                                   "total_tokens": 3 + len(words)}})
    payloads = [chunk("", role=True), *(chunk(w) for w in words), chunk(finish="stop"), usage]
    return [b"data: " + p + b"\n\n" for p in payloads] + [b"data: [DONE]\n\n"]


async def send_frames(request: web.Request, frames: list[bytes], hang_after: int | None = None,
                      compress: bool = False) -> web.StreamResponse:
    """Stream `frames`; with `hang_after`, stop after that many and keep the connection open."""
    headers = {"content-type": "text/event-stream"}
    if compress:
        headers["content-encoding"] = "gzip"
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    body = frames if hang_after is None else frames[:hang_after]
    if compress:
        await resp.write(gzip.compress(b"".join(body)))
    else:
        for frame in body:
            await resp.write(frame)
    if hang_after is not None:
        await asyncio.sleep(3600)
    await resp.write_eof()
    return resp


async def send_json(request: web.Request, obj: Any, status: int = 200, compress: bool = False,
                    hang_mid_body: bool = False) -> web.StreamResponse:
    raw = orjson.dumps(obj)
    headers = {"content-type": "application/json"}
    if compress:
        raw = gzip.compress(raw)
        headers["content-encoding"] = "gzip"
    if hang_mid_body:  # the headers and half the body, then silence
        resp = web.StreamResponse(status=status, headers={**headers, "content-length": str(len(raw))})
        await resp.prepare(request)
        await resp.write(raw[: len(raw) // 2])
        await asyncio.sleep(3600)
        return resp
    return web.Response(body=raw, status=status, headers=headers)


async def default_handler(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    if body.get("stream"):
        return await send_frames(request, answer_frames())
    return await send_json(request, completion())


class FakeUpstream:
    """`with FakeUpstream(handler) as up:` serves POST /v1/chat/completions with `handler` on `up.base`;
    GET /v1/models answers 200 (reachable). Records each request's body, headers and how it ended."""

    def __init__(self, handler: Handler = default_handler) -> None:
        self.handler = handler
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self.ended: list[str] = []  # "answered" or "disconnected", per chat request
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers)})
        try:
            resp = await self.handler(request, body)
        except (asyncio.CancelledError, ConnectionResetError):
            self.ended.append("disconnected")
            raise
        self.ended.append("answered")
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> FakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def wait_ended(self, count: int = 1, timeout_s: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while len(self.ended) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.ended)


class SilentListener:
    """A port that listens and never accepts: connections complete in the kernel, then nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


def local_backend(api_base: str, **timeouts: float) -> dict[str, Any]:
    """The vllm-local backend at `api_base` (a FakeUpstream's base), with the tests' short timeouts."""
    t = {"connect_s": 0.5, "first_token_s": 1.0, "idle_s": 1.0, "total_s": 30, **timeouts}
    return {"vllm-local": {"provider": "hosted_vllm", "model": MODEL, "api_base": f"{api_base}/v1", "timeouts": t}}
