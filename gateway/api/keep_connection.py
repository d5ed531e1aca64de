"""Unexpected exceptions end as OpenAI-shaped 500s without closing the client's connection.

Starlette's outermost error middleware answers a 500 and then re-raises; uvicorn, seeing the
exception, closes the keep-alive connection without notice, so the client's next request on it
fails. This middleware sits inside it: it answers the 500 itself (through the app's own
`Exception` handler, so the answer is counted and shaped like every other error) and swallows
the exception once it has been logged.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class KeepConnection:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise  # the answer is under way: only closing the connection can tell the client
            handler = scope["app"].exception_handlers[Exception]
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
